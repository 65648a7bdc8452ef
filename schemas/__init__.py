"""Pydantic models and Arrow schemas: the one place where Refinery's data shapes are described."""
