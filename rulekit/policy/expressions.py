"""The policy expression language: simpleeval's rules, checked once at load, compiled to Python.

simpleeval defines the language (its node whitelist is the outer bound, asserted below) and serves as
the reference interpreter in the tests. Because a checked policy is compiled into one generated
function (and a numpy form for batches), everything simpleeval would only stop at run time (string
arithmetic, ``**``, dunder attributes, imports, lambdas, comprehensions) is refused here, statically.
"""
from __future__ import annotations

import ast
import difflib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import simpleeval


class Type(StrEnum):
    NUMBER = "number"
    BOOL = "bool"
    TEXT = "text"
    TEXT_LIST = "text list"


ALLOWED_NODES = (ast.Constant, ast.Name, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp,
                 ast.Call)
assert all(node in simpleeval.SimpleEval().nodes for node in ALLOWED_NODES)

ARITHMETIC = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
EQUALITY = (ast.Eq, ast.NotEq)
MEMBERSHIP = (ast.In, ast.NotIn)
FUNCTIONS = {"min": (2, None), "max": (2, None), "abs": (1, 1)}  # name: (fewest, most) arguments
MAX_TEXT_LENGTH = 200
MAX_DEPTH = 100  # nesting of an expression's tree; the checker and the compiler recurse over it

REFUSED = {
    ast.Pow: "'**' is refused: a huge power can stall the engine; multiply instead",
    ast.Attribute: "attribute access is refused (no x.y, and never dunders such as __class__)",
    ast.Subscript: "indexing is refused",
    ast.Lambda: "lambda is refused",
    ast.ListComp: "comprehensions are refused",
    ast.SetComp: "comprehensions are refused",
    ast.DictComp: "comprehensions are refused",
    ast.GeneratorExp: "comprehensions are refused",
    ast.NamedExpr: "assignment (:=) is refused",
    ast.JoinedStr: "f-strings are refused",
    ast.Await: "await is refused",
    ast.Yield: "yield is refused",
    ast.Starred: "*args is refused",
}


def closest(word: str, candidates: Iterable[str], cutoff: float = 0.7) -> str | None:
    """The candidate closest to ``word`` (case aside; difflib's ratio at least ``cutoff``)."""
    by_folded = {str(c).casefold(): str(c) for c in candidates}
    close = difflib.get_close_matches(str(word).casefold(), list(by_folded), n=1, cutoff=cutoff)
    return by_folded[close[0]] if close else None


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.7) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``candidates``, else ``''``."""
    found = closest(word, candidates, cutoff)
    return f" (did you mean '{found}'?)" if found else ""


class ExpressionError(Exception):
    """A problem in one expression, with the fragment it concerns."""


@dataclass(frozen=True)
class Expression:
    """A checked expression: its source, its tree, its result type and the names it reads."""

    text: str
    tree: ast.expr
    type: Type
    names: frozenset[str]
    # (name, enumerated input) for each name compared with an enumerated input: the loader checks
    # that a param there holds words of that input's vocabulary
    enumerated_uses: frozenset[tuple[str, str]] = frozenset()


def check(text: str, names: Mapping[str, Type],
          functions: Mapping[str, tuple[int, int | None]] = FUNCTIONS,
          vocabularies: Mapping[str, tuple[str, ...]] | None = None) -> Expression:
    """Parse and type-check ``text`` against the declared ``names``; raise ExpressionError.

    ``vocabularies``: the words each enumerated input can take; a text literal compared with such
    an input must be one of them.
    """
    source = " ".join(text.split())
    try:
        tree = ast.parse(source, mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"not a single expression: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ExpressionError(f"nested more than {MAX_DEPTH} deep; split it into formulas") from None
    if _depth(tree) > MAX_DEPTH:
        raise ExpressionError(f"nested more than {MAX_DEPTH} deep; split it into formulas")
    checker = _Checker(source, names, functions, vocabularies or {})
    result = checker.visit(tree)
    return Expression(source, tree, result, frozenset(checker.used),
                      frozenset(checker.enumerated_uses))


def vocabulary_problem(word: object, input_name: str, words: tuple[str, ...]) -> str | None:
    """Why ``word`` cannot be a value of the enumerated input, or None when it can."""
    if word in words:
        return None
    return (f"{word!r} is not a {input_name} (one of {', '.join(words)})"
            f"{did_you_mean(str(word), words)}")


def _depth(tree: ast.AST) -> int:
    """The tree's depth, counted without recursion (the tree may be deep enough to overflow it)."""
    deepest, pending = 0, [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:
            pending.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


class _Checker:
    def __init__(self, source: str, names: Mapping[str, Type],
                 functions: Mapping[str, tuple[int, int | None]],
                 vocabularies: Mapping[str, tuple[str, ...]]):
        self.source = source
        self.names = names
        self.functions = functions
        self.vocabularies = vocabularies
        self.used: set[str] = set()
        self.enumerated_uses: set[tuple[str, str]] = set()

    def fail(self, node: ast.AST, message: str) -> ExpressionError:
        fragment = ast.get_source_segment(self.source, node) or ""
        return ExpressionError(f"{message} (in '{fragment}')" if fragment else message)

    def visit(self, node: ast.AST) -> Type:
        for refused, message in REFUSED.items():
            if isinstance(node, refused) or getattr(node, "op", None).__class__ is refused:
                raise self.fail(node, message)
        if not isinstance(node, ALLOWED_NODES):
            raise self.fail(node, f"{type(node).__name__} is not part of the policy language")
        return getattr(self, f"visit_{type(node).__name__}")(node)

    def visit_Constant(self, node: ast.Constant) -> Type:
        value = node.value
        if isinstance(value, bool):
            return Type.BOOL
        if isinstance(value, (int, float)):
            return Type.NUMBER
        if isinstance(value, str):
            if len(value) > MAX_TEXT_LENGTH:
                raise self.fail(node, f"text longer than {MAX_TEXT_LENGTH} characters")
            return Type.TEXT
        raise self.fail(node, f"constant of type {type(value).__name__} is not allowed")

    def visit_Name(self, node: ast.Name) -> Type:
        if node.id.startswith("_"):
            raise self.fail(node, f"names starting with '_' are refused: {node.id}")
        if node.id not in self.names:
            raise self.fail(node, f"unknown name '{node.id}'{did_you_mean(node.id, self.names)}")
        self.used.add(node.id)
        return self.names[node.id]

    def visit_BinOp(self, node: ast.BinOp) -> Type:
        if type(node.op) not in ARITHMETIC:
            raise self.fail(node, f"operator {type(node.op).__name__} is not allowed; use + - * /")
        for side in (node.left, node.right):
            if self.visit(side) is not Type.NUMBER:
                raise self.fail(side, "arithmetic needs numbers (text arithmetic is refused)")
        return Type.NUMBER

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Type:
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            if operand is not Type.BOOL:
                raise self.fail(node, "'not' needs a true/false value")
            return Type.BOOL
        if isinstance(node.op, (ast.USub, ast.UAdd)) and operand is Type.NUMBER:
            return Type.NUMBER
        raise self.fail(node, "unary operator needs a number")

    def visit_BoolOp(self, node: ast.BoolOp) -> Type:
        for value in node.values:
            if self.visit(value) is not Type.BOOL:
                raise self.fail(value, "'and'/'or' need true/false values on both sides")
        return Type.BOOL

    def visit_Compare(self, node: ast.Compare) -> Type:
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=False):
            left_type, right_type = self.visit(left), self.visit(right)
            if isinstance(op, ORDERING):
                if left_type is not Type.NUMBER or right_type is not Type.NUMBER:
                    raise self.fail(node, "<, <=, >, >= compare numbers only")
            elif isinstance(op, EQUALITY):
                if left_type is not right_type or left_type is Type.TEXT_LIST:
                    raise self.fail(node, f"cannot compare {left_type.value} with {right_type.value}")
            elif isinstance(op, MEMBERSHIP):
                if left_type is not Type.TEXT or right_type is not Type.TEXT_LIST:
                    raise self.fail(node, "'in' tests a text value against a list parameter")
            else:
                raise self.fail(node, f"comparison {type(op).__name__} is not allowed")
            self._check_words(node, left, right)
            left = right
        return Type.BOOL

    def _check_words(self, node: ast.Compare, left: ast.expr, right: ast.expr) -> None:
        """A text compared with an enumerated input must be one of its words."""
        for enumerated, other in ((left, right), (right, left)):
            if not (isinstance(enumerated, ast.Name) and enumerated.id in self.vocabularies):
                continue
            if isinstance(other, ast.Constant) and isinstance(other.value, str):
                problem = vocabulary_problem(other.value, enumerated.id,
                                             self.vocabularies[enumerated.id])
                if problem:
                    raise self.fail(node, problem)
            elif isinstance(other, ast.Name):
                self.enumerated_uses.add((other.id, enumerated.id))

    def visit_IfExp(self, node: ast.IfExp) -> Type:
        if self.visit(node.test) is not Type.BOOL:
            raise self.fail(node.test, "the condition of 'x if condition else y' must be true/false")
        body, orelse = self.visit(node.body), self.visit(node.orelse)
        if body is not orelse:
            raise self.fail(node, f"both branches must have one type ({body.value} vs {orelse.value})")
        return body

    def visit_Call(self, node: ast.Call) -> Type:
        allowed = ", ".join(self.functions)
        if not isinstance(node.func, ast.Name):
            self.visit(node.func)  # reports a lambda, an attribute... by its own name
            raise self.fail(node, f"only named functions can be called ({allowed})")
        if node.func.id not in self.functions:
            raise self.fail(node, f"unknown function '{node.func.id}' (allowed: {allowed})")
        if node.keywords:
            raise self.fail(node, "keyword arguments are refused")
        fewest, most = self.functions[node.func.id]
        count = len(node.args)
        if count < fewest or (most is not None and count > most):
            raise self.fail(node, f"{node.func.id}() takes {fewest}{'' if most else '+'} arguments")
        for arg in node.args:
            if self.visit(arg) is not Type.NUMBER:
                raise self.fail(arg, f"{node.func.id}() takes numbers")
        return Type.NUMBER


# --- compilation ------------------------------------------------------------------------------

def _min2(a: float, b: float) -> float:
    """min() of two that propagates NaN like numpy, so scalar and batch paths agree on bad inputs."""
    return a if (a != a or a < b) else b


def _max2(a: float, b: float) -> float:
    return a if (a != a or a > b) else b


def _divide(numerator: float, denominator: float) -> float:
    """IEEE division (x/0 is +-inf, 0/0 is NaN) as numpy does, instead of raising."""
    try:
        return numerator / denominator
    except ZeroDivisionError:
        if numerator != numerator or numerator == 0:
            return math.nan
        return math.copysign(math.inf, numerator) * math.copysign(1.0, denominator)


SCALAR_RUNTIME: dict[str, Callable] = {"_min": _min2, "_max": _max2, "_abs": abs, "_div": _divide}
VECTOR_RUNTIME: dict[str, Callable] = {
    "_min": np.minimum, "_max": np.maximum,
    "_abs": np.abs, "_and": lambda *a: _reduce(np.logical_and, a),
    "_or": lambda *a: _reduce(np.logical_or, a), "_not": np.logical_not, "_where": np.where,
    "_isin": lambda values, allowed: np.isin(values, list(allowed)), "_div": np.true_divide,
}


def _reduce(function: Callable, values: tuple) -> np.ndarray:
    result = values[0]
    for value in values[1:]:
        result = function(result, value)
    return result


class _Inline(ast.NodeTransformer):
    """Replace parameter names by their (effective) values and route calls to the runtime helpers."""

    def __init__(self, constants: Mapping[str, object], ieee_division: bool):
        self.constants = constants
        self.ieee_division = ieee_division

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.constants:
            value = self.constants[node.id]
            if isinstance(value, (list, tuple, frozenset)):
                return ast.copy_location(ast.Name(id=f"_list_{node.id}", ctx=ast.Load()), node)
            return ast.copy_location(ast.Constant(value=value), node)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        """Calls go to the runtime helpers; min/max of many become nested two-argument calls."""
        self.generic_visit(node)
        helper = ast.Name(id=f"_{node.func.id}", ctx=ast.Load())
        if node.func.id in ("min", "max"):
            result = node.args[0]
            for arg in node.args[1:]:
                result = ast.Call(func=helper, args=[result, arg], keywords=[])
            return ast.copy_location(result, node)
        node.func = helper
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Div) and self.ieee_division:
            return ast.copy_location(ast.Call(func=ast.Name(id="_div", ctx=ast.Load()),
                                              args=[node.left, node.right], keywords=[]), node)
        return node


class _Vectorise(ast.NodeTransformer):
    """Turn scalar control flow into numpy element-wise operations."""

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        helper = "_and" if isinstance(node.op, ast.And) else "_or"
        return ast.Call(func=ast.Name(id=helper, ctx=ast.Load()), args=node.values, keywords=[])

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            return ast.Call(func=ast.Name(id="_not", ctx=ast.Load()), args=[node.operand], keywords=[])
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        self.generic_visit(node)
        return ast.Call(func=ast.Name(id="_where", ctx=ast.Load()),
                        args=[node.test, node.body, node.orelse], keywords=[])

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        parts = []
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=False):
            if isinstance(op, MEMBERSHIP):
                part: ast.expr = ast.Call(func=ast.Name(id="_isin", ctx=ast.Load()),
                                          args=[left, right], keywords=[])
                if isinstance(op, ast.NotIn):
                    part = ast.Call(func=ast.Name(id="_not", ctx=ast.Load()), args=[part], keywords=[])
            else:
                part = ast.Compare(left=left, ops=[op], comparators=[right])
            parts.append(part)
            left = right
        if len(parts) == 1:
            return parts[0]
        return ast.Call(func=ast.Name(id="_and", ctx=ast.Load()), args=parts, keywords=[])


class _InlineMinMax(ast.NodeTransformer):
    """Scalar ``_min(a, b)`` / ``_max(a, b)`` written out as ``_min2``/``_max2`` do it, without a
    call: ``(_t1 if (_t1 := a) != _t1 or _t1 < (_t2 := b) else _t2)``. ``b`` is not computed
    when ``a`` is NaN (the result is NaN either way; only a division by zero inside ``b`` could
    differ, and that only decides whether the IEEE form is run, which gives the same values).
    ``temporaries`` numbers the names, unique within one generated function."""

    def __init__(self, temporaries: Iterator[int]):
        self.temporaries = temporaries

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if not (isinstance(node.func, ast.Name) and node.func.id in ("_min", "_max")):
            return node
        first, second = (f"_t{next(self.temporaries)}" for _ in range(2))
        order = ast.Lt() if node.func.id == "_min" else ast.Gt()

        def load(name: str) -> ast.Name:
            return ast.Name(id=name, ctx=ast.Load())

        test = ast.BoolOp(op=ast.Or(), values=[
            ast.Compare(left=ast.NamedExpr(target=ast.Name(id=first, ctx=ast.Store()),
                                           value=node.args[0]),
                        ops=[ast.NotEq()], comparators=[load(first)]),
            ast.Compare(left=load(first), ops=[order], comparators=[
                ast.NamedExpr(target=ast.Name(id=second, ctx=ast.Store()), value=node.args[1])])])
        return ast.copy_location(ast.IfExp(test=test, body=load(first), orelse=load(second)), node)


def to_source(expression: Expression, constants: Mapping[str, object], vector: bool = False,
              ieee_division: bool = True, temporaries: Iterator[int] | None = None) -> str:
    """Python source for ``expression`` with parameters inlined; numpy element-wise if ``vector``.

    Without ``ieee_division`` a division by zero raises instead of giving inf/NaN: the fast scalar
    form, which the engine reruns in the IEEE form when it raises (identical results otherwise).
    ``temporaries`` (scalar only) writes min and max out inline (``_InlineMinMax``).
    """
    tree = _Inline(constants, ieee_division or vector).visit(_copy(expression.tree))
    if vector:
        tree = _Vectorise().visit(tree)
    elif temporaries is not None:
        tree = _InlineMinMax(temporaries).visit(tree)
    return ast.unparse(ast.fix_missing_locations(tree))


def _copy(tree: ast.expr) -> ast.expr:
    return ast.parse(ast.unparse(tree), mode="eval").body


def reference_evaluate(expression: Expression, values: Mapping[str, object],
                       extra_functions: Mapping[str, Callable] | None = None) -> object:
    """Evaluate with simpleeval itself: the slow reference the compiled code is tested against."""
    functions = {"min": lambda *v: _reduce(_min2, v), "max": lambda *v: _reduce(_max2, v),
                 "abs": abs, **(extra_functions or {})}
    evaluator = simpleeval.SimpleEval(names=dict(values), functions=functions)
    evaluator.operators[ast.Div] = _divide
    return evaluator.eval(expression.text, previously_parsed=expression.tree)
