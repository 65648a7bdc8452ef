"""Hand-labelled answer pairs of competition mathematics, by answer type: for each ground truth, answers that are
the same (in another notation) and answers that are different. Written here, not downloaded; every label is a
judgement made when the pair was written, including the policies the README states (degrees are not radians by
default; a percentage equals its fraction; units must agree when both sides name one).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    kind: str
    truth: str
    same: tuple[str, ...]
    different: tuple[str, ...]


CASES = [
    # integers, signs and large integers with separators
    Case("integer", "42", ("42", "+42", "42.0", "042", "\\mathbf{42}"), ("43", "-42", "4.2", "24")),
    Case("integer", "-7", ("-7", "- 7", "-7.00", "(-7)"), ("7", "-6", "-\\frac{7}{2}")),
    Case("integer", "0", ("0", "0.0", "-0"), ("1", "O", "\\emptyset")),
    Case(
        "large integer",
        "1000000",
        ("1,000,000", "1\\,000\\,000", "10^6", "1000000", "1{,}000{,}000"),
        ("100000", "1,000,001", "10^7", "1,000"),
    ),
    Case("integer", "2024", ("2,024", "2024.0"), ("2023", "2042")),
    Case("large integer", "2^{10}", ("1024", "1,024", "2^{10}"), ("1023", "2^{11}", "20")),
    Case("large integer", "123456789", ("123,456,789", "123\\,456\\,789", "123456789"), ("123456788", "123,456")),
    # fractions and decimals
    Case(
        "fraction",
        "\\frac{1}{2}",
        ("0.5", "1/2", "\\dfrac{1}{2}", "\\tfrac12", "\\frac{2}{4}", ".5"),
        ("\\frac{1}{3}", "2", "0.51", "-\\frac{1}{2}"),
    ),
    Case(
        "fraction",
        "-\\frac{3}{4}",
        ("-0.75", "\\frac{-3}{4}", "-3/4", "\\frac{3}{-4}"),
        ("\\frac{3}{4}", "-\\frac{4}{3}"),
    ),
    Case("fraction", "\\frac{22}{7}", ("22/7", "\\dfrac{22}{7}", "3\\frac{1}{7}"), ("3.14", "\\pi", "\\frac{7}{22}")),
    Case("fraction", "\\frac{5}{3}", ("1\\frac{2}{3}", "5/3"), ("\\frac{3}{5}", "1.6")),
    Case("decimal", "0.25", ("\\frac{1}{4}", "1/4", "0.250", "25\\%"), ("0.26", "2.5", "\\frac{1}{5}")),
    Case("decimal", "3.5", ("\\frac{7}{2}", "3.50", "3\\frac{1}{2}"), ("3.05", "35", "\\frac{5}{2}")),
    # radicals
    Case(
        "radical",
        "2\\sqrt{2}",
        ("\\sqrt{8}", "2 \\sqrt 2", "2\\sqrt{2}", "\\sqrt{2} \\cdot 2"),
        ("\\sqrt{2}", "4", "2\\sqrt{3}"),
    ),
    Case(
        "radical",
        "\\frac{\\sqrt{3}}{2}",
        ("\\frac{1}{2}\\sqrt{3}", "\\sqrt{3}/2", "\\frac{\\sqrt{12}}{4}"),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{3}{2}", "\\sqrt{\\frac{3}{2}}"),
    ),
    Case("radical", "3+\\sqrt{5}", ("\\sqrt{5}+3", "3 + \\sqrt{5}"), ("3-\\sqrt{5}", "3\\sqrt{5}", "8")),
    Case("radical", "\\sqrt[3]{2}", ("2^{1/3}", "2^{\\frac{1}{3}}"), ("\\sqrt{2}", "\\sqrt[3]{3}")),
    # multiples of pi
    Case("pi", "3\\pi", ("3 \\pi", "\\pi \\cdot 3", "3\\pi", "\\frac{6\\pi}{2}"), ("3", "\\frac{\\pi}{3}", "9.42")),
    Case(
        "pi",
        "\\frac{\\pi}{6}",
        ("\\pi/6", "\\frac{1}{6}\\pi", "\\dfrac{\\pi}{6}"),
        ("\\frac{\\pi}{3}", "30", "\\frac{6}{\\pi}"),
    ),
    Case("pi", "16\\pi", ("16 \\pi", "\\pi \\cdot 16"), ("16", "8\\pi", "16\\pi^2")),
    # expressions and polynomials
    Case("expression", "x^2+2x+1", ("(x+1)^2", "x^2 + 2x + 1", "1+2x+x^2"), ("x^2+1", "(x-1)^2", "x^2+2x")),
    Case("expression", "2x-6", ("2(x-3)", "-6+2x"), ("2x+6", "x-3", "2x-5")),
    Case("expression", "\\frac{x+1}{x}", ("1+\\frac{1}{x}", "\\frac{1}{x}+1"), ("\\frac{x}{x+1}", "x+1")),
    Case("expression", "\\frac{1}{x^2}", ("x^{-2}",), ("x^2", "\\frac{1}{x}")),
    Case("expression", "e^2", ("e^{2}", "\\exp(2)"), ("2e", "e^3")),
    Case("expression", "1+i", ("i+1",), ("1-i", "1+2i")),
    # sets
    Case(
        "set", "\\{1,2,3\\}", ("\\{3,2,1\\}", "\\{1, 2, 3\\}", "\\left\\{1,2,3\\right\\}"), ("\\{1,2\\}", "\\{1,2,4\\}")
    ),
    Case("set", "\\{-1, 1\\}", ("\\{1,-1\\}", "\\{ -1, 1 \\}"), ("\\{1\\}", "\\{-1, 0, 1\\}", "\\{-1, 2\\}")),
    # intervals and unions of intervals
    Case("interval", "(0, 1]", ("(0,1]", "\\left(0, 1\\right]", "( 0 , 1 ]"), ("[0,1]", "(0,1)", "[0,1)", "(0,2]")),
    Case(
        "interval",
        "[2, \\infty)",
        ("[2,\\infty)", "\\left[2, \\infty\\right)"),
        ("(2,\\infty)", "[2,\\infty]", "[3,\\infty)"),
    ),
    Case("interval", "(-\\infty, 3)", ("(-\\infty,3)",), ("(-\\infty,3]", "(3,\\infty)", "(-\\infty,-3)")),
    Case(
        "union",
        "(-\\infty,0)\\cup(1,\\infty)",
        ("(1,\\infty)\\cup(-\\infty,0)", "(-\\infty, 0) \\cup (1, \\infty)"),
        ("(-\\infty,0]\\cup(1,\\infty)", "(0,1)", "(-\\infty,1)\\cup(0,\\infty)"),
    ),
    Case("union", "[-2,-1]\\cup[1,2]", ("[1,2]\\cup[-2,-1]",), ("[-2,2]", "[-2,-1)\\cup[1,2]")),
    # ordered tuples
    Case("tuple", "(1,2)", ("(1, 2)", "\\left(1,2\\right)"), ("(2,1)", "(1,3)")),
    Case("tuple", "(3,-4,5)", ("(3, -4, 5)",), ("(3,4,5)", "(5,-4,3)", "(3,-4)")),
    Case("tuple", "\\left(\\frac{1}{2}, 3\\right)", ("(0.5, 3)", "(\\frac12, 3)"), ("(3, \\frac{1}{2})", "(0.5, 2)")),
    # matrices and vectors
    Case(
        "matrix",
        "\\begin{pmatrix}1\\\\2\\end{pmatrix}",
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{bmatrix}1\\\\2\\end{bmatrix}"),
        ("\\begin{pmatrix}2\\\\1\\end{pmatrix}", "\\begin{pmatrix}1\\\\3\\end{pmatrix}"),
    ),
    Case(
        "matrix",
        "\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}",
        ("\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}",),
        ("\\begin{pmatrix}0&1\\\\1&0\\end{pmatrix}", "\\begin{pmatrix}1&0\\\\0&2\\end{pmatrix}"),
    ),
    # inequalities
    Case("inequality", "x>2", ("2<x", "x > 2"), ("x\\ge 2", "x<2", "x>3")),
    Case("inequality", "-1\\le x\\le 1", ("-1 \\leq x \\leq 1",), ("-1<x<1", "-1\\le x\\le 2")),
    # equations and systems
    Case("equation", "y=2x+1", ("y = 1 + 2x", "y=2x+1"), ("y=2x-1", "y=x+1", "y=2x")),
    Case("equation", "x^2+y^2=25", ("y^2+x^2=25", "x^2 + y^2 = 25"), ("x^2+y^2=5", "x^2-y^2=25")),
    Case("system", "x=1, y=2", ("y=2, x=1", "x = 1, y = 2"), ("x=2, y=1", "x=1, y=3")),
    # degrees (default policy: degrees are not radians)
    Case("degrees", "60^\\circ", ("60", "60^{\\circ}", "60^\\circ"), ("\\frac{\\pi}{3}", "30^\\circ", "120^\\circ")),
    Case("degrees", "90^\\circ", ("90",), ("\\frac{\\pi}{2}", "180^\\circ")),
    Case("degrees", "45^\\circ", ("45", "45^{\\circ}"), ("\\frac{\\pi}{4}", "135^\\circ")),
    # percentages
    Case("percentage", "25\\%", ("25", "0.25", "25\\%", "\\frac{1}{4}"), ("2.5\\%", "0.025", "75\\%")),
    Case("percentage", "12.5\\%", ("12.5", "0.125", "\\frac{1}{8}"), ("12\\%", "1.25")),
    # numbers with units and currency
    Case(
        "units",
        "5\\text{ cm}",
        ("5", "5 \\text{cm}", "5\\,\\text{cm}", "5\\mbox{ cm}"),
        ("6\\text{ cm}", "5\\text{ m}", "50"),
    ),
    Case("units", "12\\text{ meters}", ("12", "12 \\text{ meters}"), ("12\\text{ seconds}", "13\\text{ meters}")),
    Case("currency", "\\$18.90", ("18.90", "18.9", "\\$18.9"), ("18.09", "\\$19")),
    # text answers
    Case("text", "\\text{Evelyn}", ("Evelyn", "\\text{evelyn}", "\\textbf{Evelyn}"), ("Bob", "\\text{Eve}")),
    Case("text", "\\text{Tuesday}", ("Tuesday", "\\text{tuesday}"), ("Monday", "\\text{Thursday}")),
    Case("text", "\\text{even}", ("even", "\\text{Even}"), ("odd", "\\text{odd}", "neither")),
    # multiple-choice letters
    Case("choice", "B", ("(B)", "\\text{(B)}", "B", "\\textbf{(B)}", "\\text{B}"), ("C", "(A)", "\\text{(D)}")),
    Case("choice", "\\text{(E)}", ("E", "(E)", "\\textbf{(E)}"), ("D", "(C)")),
    # several answers separated by commas
    Case("several", "1, 2", ("2, 1", "1,2", "2,1"), ("1, 3", "1", "1, 2, 3")),
    Case("several", "-3, \\frac{1}{2}", ("\\frac12, -3", "-3, 0.5"), ("3, \\frac{1}{2}", "-3")),
    Case("several", "3, 5, 7", ("7, 5, 3", "5, 3, 7"), ("3, 5", "3, 5, 8")),
    Case("several", "2, -2", ("-2, 2", "\\pm 2"), ("2", "2, 2")),
]

#: Pairs an attacker wrote to get a different answer verified (or an equal one dropped): (truth, answer, same).
ADVERSARIAL = [
    # operators and brackets count in the string comparison
    ("x-y", "x+y", False), ("-x", "x", False), ("x<y", "x>y", False), ("(a, b)", "[a, b]", False),
    ("a-b", "ab", False),
    # digits apart: thousands separators only, never a sum or a product
    ("357", "12 345", False), ("7", "2\\,5", False), ("0", "1 000", False), ("0", "1\\,00", False),
    ("100000", "100 000", True), ("12345", "12\\,345", True),
    # units: powers, spacing, wrappers, trailing punctuation, compound units, case of symbols
    ("5\\text{ m}^2", "5\\text{ cm}^2", False), ("5\\text{ cm}^{2}", "5\\text{ cm}^{3}", False),
    ("5\\text{ m}", "5\\text{ m}^2", False), ("5 km", "5 m", False), ("5 g", "5 kg", False),
    ("5\\text{ mm}", "5\\text{ cm},", False), ("5\\text{ mm}", "5\\text{ cm}\\text{.}", False),
    ("5\\text{ mm}", "5~\\text{cm}", False), ("5\\text{ mm}", "5\\quad\\text{cm}", False),
    ("5\\text{ mm}", "5\\textnormal{ cm}", False), ("5\\text{ mm}", "5{\\rm cm}", False),
    ("5\\text{ mm}", "5\\mathrm{\\ cm}", False), ("5\\text{ km/h}", "5\\text{ m/s}", False),
    ("5 \\text{ mph}", "5\\text{ km/h}", False), ("5\\,\\text{Mm}", "5\\,\\text{mm}", False),
    ("\\$5", "5\\text{ cents}", False), ("25\\%", "25\\text{ cm}", False), ("60^\\circ", "60 \\text{ radians}", False),
    ("12\\text{ hours}", "12 hrs", True), ("12\\text{ minutes}", "12 mins", True),
    ("3\\text{ centimeters}", "3 centimetres", True), ("5\\text{ cm}", "5 cm", True), ("5\\text{ m}^2", "5 m^2", True),
    # sets are not tuples or intervals
    ("(1,2)", "\\{1,2\\}", False), ("(3,-4,5)", "\\{3,-4,5\\}", False), ("\\{0, 1\\}", "(0, 1)", False),
    ("\\emptyset", "\\varnothing", True),
    # intervals closed at infinity, however written
    ("[2,\\infty)", "[2, {\\infty}]", False), ("[2,\\infty)", "[2, \\infty\\,]", False),
    ("[2,\\infty)", "[2, \\infty\\rbrack", False), ("[2,\\infty)", "[2, +{\\infty}]", False),
    ("(-\\infty,2)", "[\\,-\\infty, 2)", False), ("(-\\infty,2)", "\\lbrack -\\infty, 2)", False),
    ("[2,\\infty)", "\\lbrack 2, \\infty)", True),
    # a percentage is its number only when the answer leaves the % out
    ("0.25", "0.25\\%", False), ("\\frac{1}{4}", "\\frac{1}{4}\\%", False), ("5", "5\\%\\%", False),
    ("12.5\\%", "12.5", True),
    # a second attacker: units after any expression, in more spellings; number words; sets behind $ or "x \\in"
    ("16\\pi\\text{ m}^2", "16\\pi\\text{ cm}^2", False), ("\\sqrt{2}\\text{ cm}", "\\sqrt{2}\\text{ m}", False),
    ("8\\text{ m}", "2^{3}\\text{ cm}", False), ("0.5\\text{ m}", "\\frac{1}{2}\\text{ cm}", False),
    ("x\\text{ m}", "x\\text{ cm}", False), ("5\\text{ m}", "5\\text{ m}^{-1}", False),
    ("5\\text{ km s}^{-1}", "5\\text{ m s}^{-1}", False), ("5\\text{ km}/\\text{s}", "5\\text{ m}/\\text{s}", False),
    ("5\\,{\\text{cm}}", "5\\,{\\text{m}}", False), ("5 \\, \\rm cm", "5 \\, \\rm m", False),
    ("7g", "7kg", False), ("5cm", "5m", False),
    ("5", "5 \\text{ million}", False), ("5", "5 \\text{ hundred}", False), ("2", "2 \\text{ dozen}", False),
    ("5", "5 \\text{ squared}", False), ("5000", "5 \\text{ thousand}", True), ("25", "5 \\text{ squared}", True),
    ("(1,2)", "\\{1,2\\}.", False), ("(1,2)", "$\\{1,2\\}$", False), ("(1,2)", "x \\in \\{1,2\\}", False),
    ("0.25", "0.25 \\text{ percent}", False), ("0.25", "0.25\\,\\%", False), ("0.25", "0.25\\text{%}", False),
    ("0.25", "0.25％", False), ("357", "12\\quad345", False), ("357", "12\\quad 345", False),
    ("5\\text{ cm}", "$5$", True), ("25\\%", "$25$", True), ("2500", "2.5e3", True), ("0.001", "1e-3", True),
    ("12\\text{ box}", "12 boxes", True), ("3\\text{ glasses}", "3 glass", True), ("5\\text{ km}", "5 Km", True),
    ("2\\text{ yrs}", "2 years", True),
    # a third attacker: constants in \\mathrm are not units, letters after a number are an expression, compound
    # units keep every factor, scale words in more forms
    ("2-\\mathrm{i}", "2+\\mathrm{i}", False), ("1-\\mathrm{e}", "1+\\mathrm{e}", False),
    ("1+3\\mathrm{i}", "4", False), ("2\\mathrm{i}", "2", False), ("2\\mathrm{e}^{2}", "2", False),
    ("3", "3\\mathrm{e}", False), ("2", "2\\mathit{x}", False),
    ("x^2+2xy", "x^2+2", False), ("b^2-4ac", "b^2-4", False), ("(a+b)^2-2ab", "(a+b)^2-2", False),
    ("\\frac12ab", "\\frac12", False), ("2", "2xy", False),
    ("10\\text{ N}\\cdot\\text{m}", "10\\text{ kN}\\cdot\\text{m}", False),
    ("5\\text{ m}\\cdot\\text{s}^{-1}", "5\\text{ km}\\cdot\\text{s}^{-1}", False),
    ("5\\text{ m}\\,\\text{s}^{-1}", "5\\text{ km}\\,\\text{s}^{-1}", False),
    ("5\\text{ m}^{10}", "5\\text{ km}^{10}", False),
    ("5", "5\\text{ hundredths}", False), ("5", "5\\text{ hundred thousand}", False),
    ("500000", "5\\text{ hundred thousand}", True), ("x^2-2xy", "x^2-2yx", True), ("b^2-4ac", "b^2-4ca", True),
    ("5\\text{ s}", "5\\text{ secs}", True), ("5\\text{ kg}", "5\\text{ kgs}", True),
    ("60^\\circ", "60\\text{ deg}", True),
]  # fmt: skip
