"""A small, safe parser from answer text (plain or LaTeX-ish) to a sympy expression.

Model output is never passed to ``eval``/``sympify``/``parse_expr`` (which evaluate
Python): this recursive-descent parser accepts numbers, a few named constants and
functions, single-letter variables, + - * / ^, parentheses, implicit multiplication,
``\\frac``, ``\\sqrt`` and percentages, and builds the expression tree itself. Exponents
are bounded so that ``9^9^9`` cannot stall the grader.
"""

from __future__ import annotations

import re

import sympy

MAX_CHARS = 200
MAX_EXPONENT = 1000
MAX_DIGITS = 2000

_FUNCS = {
    "sqrt": sympy.sqrt,
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tan": sympy.tan,
    "log": sympy.log,
    "ln": sympy.log,
    "exp": sympy.exp,
}
_CONSTS = {"pi": sympy.pi, "e": sympy.E, "infty": sympy.oo, "inf": sympy.oo}
_TOKEN = re.compile(r"\s*(?:(\d+\.\d*|\.\d+|\d+)|([A-Za-z]+)|(\*\*|[-+*/^(),]))")


class ParseError(ValueError):
    pass


def latex_to_plain(text: str) -> str:
    """Rewrite the LaTeX forms answers use into the plain syntax the parser reads."""
    s = text
    for _ in range(10):  # nested \frac / \sqrt
        new = re.sub(r"\\d?t?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"((\1)/(\2))", s)
        new = re.sub(r"\\sqrt\s*\[([^\]]*)\]\s*\{([^{}]*)\}", r"((\2)^(1/(\1)))", new)
        new = re.sub(r"\\sqrt\s*\{([^{}]*)\}", r"sqrt(\1)", new)
        new = re.sub(r"\\sqrt\s*(\d+|[A-Za-z])", r"sqrt(\1)", new)
        if new == s:
            break
        s = new
    s = s.replace("\\cdot", "*").replace("\\times", "*").replace("\\div", "/")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\pi", "pi").replace("\\infty", "infty")
    s = re.sub(r"\\(ln|log|sin|cos|tan|exp)\b", r"\1", s)
    s = s.replace("{", "(").replace("}", ")")
    return s


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise ParseError(f"unexpected character {text[pos]!r}")
            num, name, op = m.groups()
            if num is not None:
                self.tokens.append(("num", num))
            elif name is not None:
                self.tokens.extend(self._split_name(name))
            else:
                self.tokens.append(("op", "^" if op == "**" else op))
            pos = m.end()
        self.i = 0

    @staticmethod
    def _split_name(name: str) -> list[tuple[str, str]]:
        low = name.lower()
        if low in _FUNCS:
            return [("func", low)]
        if low in _CONSTS and name != "E":
            return [("const", low)]
        if len(name) == 1:
            return [("var", name)]
        raise ParseError(f"unknown name {name!r}")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise ParseError("unexpected end")
        self.i += 1
        return tok

    def parse(self) -> sympy.Expr:
        expr = self.sum()
        if self.peek() is not None:
            raise ParseError(f"unexpected {self.peek()[1]!r}")
        return expr

    def sum(self) -> sympy.Expr:
        expr = self.product()
        while (tok := self.peek()) and tok in (("op", "+"), ("op", "-")):
            self.take()
            rhs = self.product()
            expr = expr + rhs if tok[1] == "+" else expr - rhs
        return expr

    def product(self) -> sympy.Expr:
        expr = self.unary()
        while True:
            tok = self.peek()
            if tok in (("op", "*"), ("op", "/")):
                self.take()
                rhs = self.unary()
                expr = expr * rhs if tok[1] == "*" else expr / rhs
            elif tok is not None and (tok[0] in ("num", "var", "const", "func") or tok == ("op", "(")):
                expr = expr * self.unary()  # implicit multiplication: 2x, 3(x+1), 2sqrt(3)
            else:
                return expr

    def unary(self) -> sympy.Expr:
        if self.peek() in (("op", "-"), ("op", "+")):
            sign = self.take()[1]
            inner = self.unary()
            return -inner if sign == "-" else inner
        return self.power()

    def power(self) -> sympy.Expr:
        base = self.atom()
        if self.peek() == ("op", "^"):
            self.take()
            exponent = self.unary()
            if exponent.is_number and (not exponent.is_finite or abs(sympy.N(exponent)) > MAX_EXPONENT):
                raise ParseError("exponent too large")
            if base.is_number and exponent.is_number and base != 0:
                digits = abs(sympy.N(sympy.log(abs(base), 10))) * abs(sympy.N(exponent))
                if digits > MAX_DIGITS:
                    raise ParseError("power too large")
            return sympy.Pow(base, exponent)
        return base

    def atom(self) -> sympy.Expr:
        kind, value = self.take()
        if kind == "num":
            return sympy.Rational(value) if "." in value else sympy.Integer(value)
        if kind == "const":
            return _CONSTS[value]
        if kind == "var":
            return sympy.Symbol(value)
        if kind == "func":
            if self.peek() != ("op", "("):
                return _FUNCS[value](self.power())
            self.take()
            arg = self.sum()
            self._close()
            return _FUNCS[value](arg)
        if (kind, value) == ("op", "("):
            expr = self.sum()
            self._close()
            return expr
        raise ParseError(f"unexpected {value!r}")

    def _close(self) -> None:
        if self.take() != ("op", ")"):
            raise ParseError("missing ')'")


def parse_answer(text: str) -> sympy.Expr:
    """Parse one answer; raises ``ParseError`` when it is not a plain expression."""
    if len(text) > MAX_CHARS:
        raise ParseError("answer too long to compare symbolically")
    plain = latex_to_plain(text)
    percent = plain.rstrip().endswith("%")
    plain = plain.rstrip().rstrip("%")
    if len(plain) > 2 * MAX_CHARS or plain.count("(") > 50:
        raise ParseError("answer too complex")
    expr = _Parser(plain).parse()
    return expr / 100 if percent else expr
