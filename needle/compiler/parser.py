"""Reads the text form that :mod:`.printer` writes back into a Graph.

``parse(as_text(g))`` gives a graph with the same inputs, nodes, types, attributes (lists
come back as tuples, constants bit-exactly), composites with their decompositions, outputs
and aliases; printing it again gives the same text. The parser checks syntax and names
only: run :func:`~needle.compiler.verifier.verify` on what it returns to check the ops.
``// comments`` are allowed, and value names need not be dense in hand-written text.
"""
import json
import math
import re

from ..errors import NeedleError
from .ir import DTYPES, Graph, Node, TensorType, Value
from .ops import CONTROL_OPS
from .printer import decode_scalars


class ParseError(NeedleError, ValueError):
    """The text is not Needle IR; the message gives the line and column."""


_TOKEN = re.compile(r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<value>%\d+(?:\#\d+)?)
  | (?P<symbol>@(?:[\w.$-]+|"(?:[^"\\]|\\.)*"))
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<arrow>->)
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|(?:inf|nan)\b))
  | (?P<ident>[A-Za-z_][\w.]*)
  | (?P<punct>[{}()\[\],=:<>])
""", re.VERBOSE)
_INT = re.compile(r"[-+]?\d+\Z")
_ELEMENT = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|inf|nan)\Z"
                      r"|true\Z|false\Z")
_KINDS = {"value": "a value %N", "symbol": "a function name @name", "string": "a string",
          "number": "a number", "ident": "a name"}


class _Token:
    __slots__ = ("kind", "text", "pos", "end")

    def __init__(self, kind, text, pos, end):
        self.kind, self.text, self.pos, self.end = kind, text, pos, end


class _Parser:
    def __init__(self, text):
        self.text = text
        self.token = self.lex(0)

    # -- tokens --------------------------------------------------------------------------
    def lex(self, pos):
        """The token at ``pos`` or after the spaces and comments there."""
        while pos < len(self.text):
            m = _TOKEN.match(self.text, pos)
            if m is None:
                return _Token("bad", self.text[pos], pos, pos + 1)
            if m.lastgroup != "space":
                return _Token(m.lastgroup, m.group(), pos, m.end())
            pos = m.end()
        return _Token("end", "end of text", pos, pos)

    def advance(self):
        token, self.token = self.token, self.lex(self.token.end)
        return token

    def error(self, message, token=None):
        token = token or self.token
        line = self.text.count("\n", 0, token.pos) + 1
        column = token.pos - (self.text.rfind("\n", 0, token.pos) + 1) + 1
        raise ParseError(f"line {line}, column {column}: {message} (at {token.text!r})")

    def peek(self):
        return self.token

    def at(self, text):
        return self.token.text == text and self.token.kind in ("punct", "ident", "arrow")

    def take(self, text=None, kind=None):
        if (text is not None and not self.at(text)) or \
                (kind is not None and self.token.kind != kind):
            self.error(f"expected {text if text is not None else _KINDS[kind]}")
        return self.advance()

    def accept(self, text):
        if self.at(text):
            self.advance()
            return True
        return False

    def separated(self, item, close):
        """``item, item, ...`` up to (not taking) ``close``."""
        items = []
        if not self.at(close):
            items.append(item())
            while self.accept(","):
                items.append(item())
        return items

    # -- pieces --------------------------------------------------------------------------
    def int(self):
        token = self.take(kind="number")
        if not _INT.match(token.text):
            self.error("expected an integer", token)
        return int(token.text)

    def type(self):
        token = self.take(kind="ident")
        if token.text not in DTYPES:
            self.error(f"unknown dtype; one of {', '.join(DTYPES)}", token)
        self.take("[")
        shape = self.separated(self.int, "]")
        self.take("]")
        if any(n < 0 for n in shape):
            self.error(f"negative dimension in {token.text}{list(shape)}", token)
        return TensorType(shape, token.text)

    def symbol(self):
        text = self.take(kind="symbol").text[1:]
        return json.loads(text) if text.startswith('"') else text

    def attr_dict(self):
        self.take("{")
        attrs = {}
        for key, value in self.separated(self.attr_entry, "}"):
            attrs[key] = value
        self.take("}")
        return attrs

    def attr_entry(self):
        token = self.peek()
        if token.kind == "string":
            key = json.loads(self.take().text)
        elif token.text in ("inf", "nan"):  # names the lexer reads as numbers
            key = self.take().text
        else:
            key = self.take(kind="ident").text
        self.take("=")
        return key, self.attr_value()

    def attr_value(self):
        token = self.peek()
        if token.kind == "number" and not token.text.lower().lstrip("+-").startswith("0x"):
            self.advance()
            return int(token.text) if _INT.match(token.text) else float(token.text)
        if token.kind == "string":
            self.advance()
            return json.loads(token.text)
        if self.accept("true") or self.accept("false"):
            return token.text == "true"
        if self.at("dense"):
            return self.dense()
        if self.accept("["):
            items = self.separated(self.attr_value, "]")
            self.take("]")
            return tuple(items)
        if self.at("{"):
            return self.attr_dict()
        self.error("expected an attribute value")

    def dense(self):
        start = self.take("dense")
        self.take("<")
        t = self.type()
        self.take(">")
        size, splat = math.prod(t.shape), self.accept("splat")
        opening = self.take("(" if splat else "[")
        # the elements are read straight from the text: a large constant is a long list
        close = self.text.find(")" if splat else "]", opening.end)
        if close < 0:
            self.error(f"dense<{t}> is not closed", start)
        raw = self.text[opening.end:close].strip()
        texts = [e.strip() for e in raw.split(",")] if raw else []
        self.token = self.lex(close + 1)
        if splat and len(texts) != 1:
            self.error(f"splat takes one element, got {len(texts)}", start)
        if not splat and len(texts) != size:
            self.error(f"dense<{t}> needs {size} elements, got {len(texts)}", start)
        try:
            if not all(_ELEMENT.match(e) for e in texts):
                raise ValueError(f"{next(e for e in texts if not _ELEMENT.match(e))!r}")
            values = decode_scalars(texts, t.dtype)
        except (ValueError, OverflowError) as e:
            self.error(f"bad {t.dtype} element: {e}", start)
        return (values.repeat(size) if splat else values).reshape(t.shape)

    # -- functions -----------------------------------------------------------------------
    def func(self):
        self.take("func")
        graph, names = Graph(name=self.symbol()), {}
        self.take("(")
        for token, t in self.separated(self.argument, ")"):
            graph.inputs.append(self.define(names, token, Value(t)))
        self.take(")")
        self.take("->")
        self.take("(")
        results = self.separated(self.type, ")")
        self.take(")")
        if self.accept("aliases"):
            self.take("{")
            for out, inp in self.separated(self.alias, "}"):
                graph.aliases[out] = inp
            self.take("}")
        self.take("{")
        while not self.at("return"):
            graph.nodes.append(self.node(names))
        self.take("return")
        graph.outputs = self.separated(lambda: self.use(names), "}")
        self.take("}")
        if [v.type for v in graph.outputs] != results:
            self.error(f"@{graph.name} returns ({', '.join(repr(v.type) for v in graph.outputs)})"
                       f" but its signature says ({', '.join(map(repr, results))})")
        return graph

    def argument(self):
        token = self.take(kind="value")
        if "#" in token.text:
            self.error("expected an argument name %N", token)
        self.take(":")
        return token, self.type()

    def alias(self):
        out = self.int()
        self.take(":")
        return out, self.int()

    def define(self, names, token, value):
        if token.text in names:
            self.error(f"{token.text} is defined twice", token)
        names[token.text] = value
        return value

    def use(self, names):
        token = self.take(kind="value")
        if token.text not in names:
            self.error(f"{token.text} is not defined before this use", token)
        return names[token.text]

    def node(self, names):
        defined, count = None, 0
        if self.peek().kind == "value":
            defined, count = self.take(), 1
            if "#" in defined.text:
                self.error("expected a result name %N", defined)
            if self.accept(":"):
                count = self.int()
                if count < 2:
                    self.error("a node with several outputs defines %N:count, count >= 2")
            self.take("=")
        if self.peek().kind != "ident":
            self.error("expected a node ([%N =] op operands ...) or return")
        op = self.take()
        inputs = []
        if self.peek().kind == "value":
            inputs = self.separated(lambda: self.use(names), None)
        attrs = self.attr_dict() if self.at("{") else {}
        self.take(":")
        if self.accept("("):
            self.take(")")
            types = []
        else:
            types = [self.type()]
            while self.accept(","):
                types.append(self.type())
        if len(types) != count:
            self.error(f"{op.text} has {len(types)} result types but defines {count} values", op)
        decomposition, regions = None, None
        if self.accept("{"):
            inner = [self.func()]
            while not self.at("}"):
                inner.append(self.func())
            self.take("}")
            if op.text in CONTROL_OPS:
                regions = inner
            elif len(inner) > 1:
                self.error(f"{op.text} has {len(inner)} nested functions; only while and case "
                           f"have more than one", op)
            else:
                decomposition = inner[0]
        node = Node(op.text, inputs, types, attrs, decomposition, regions)
        if count == 1:
            self.define(names, defined, node.outputs[0])
        for i, v in enumerate(node.outputs if count > 1 else []):
            self.define(names, _Token("value", f"{defined.text}#{i}", defined.pos, defined.end), v)
        return node


def parse(text):
    """The Graph written as ``text`` (the form :func:`~needle.compiler.printer.as_text`
    prints).

    Args:
        text: one ``func``, as the printer writes it.

    Returns:
        A :class:`~needle.compiler.ir.Graph` (not verified: call ``verify`` on it).

    Raises:
        ParseError: with the line and column of what does not parse.

    Example:
        >>> g = parse('''func @main(%0: float32[2]) -> (float32[2]) {
        ...   %1 = exponential %0 : float32[2]
        ...   return %1
        ... }''')
        >>> g.nodes[0].op, g.outputs[0].type
        ('exponential', float32[2])
    """
    parser = _Parser(text)
    graph = parser.func()
    if parser.peek().kind != "end":
        parser.error("expected the end of the text after the function")
    return graph
