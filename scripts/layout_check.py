#!/usr/bin/env python3
"""Check the ward workspace layout rules (Python 3.11+, standard library only).

Rules, each reported with lines starting "layout: ":

1. No .rs file under a workspace member's src/ is over FILE_LIMIT (600) lines.
2. No function (free fn, method, trait default method, nested fn) under src/ is over
   FN_LIMIT (100) lines, counted from the line of `fn name` to the line of its closing
   brace. Declarations without a body (`fn f();`) are not measured. Items marked
   #[cfg(test)] (normally `mod tests { ... }`) and files only reached through a
   #[cfg(test)] `mod x;` are exempt.
3. No import cycle between the modules of a crate. Level 1: top-level modules (a::b
   counts as a); deeper levels: sibling modules under the same parent (server::x and
   server::y). Edges come from `crate::...`, `super::...` and `self::...` paths in
   non-test code (use trees included); the crate root is not a node.
4. No cycle among the crates' normal (and build) dependencies on other members; dev-
   dependencies may point anywhere as long as they close no cycle.

Exemptions for rules 1 and 2 live in scripts/layout_allow.txt:
    file proxy/src/config.rs 812          # reason
    fn proxy/src/inbound.rs::serve 130    # reason   (or ...rs::Type::serve)
meaning "allowed up to that many lines". Lines starting with # are comments.

Usage: scripts/layout_check.py [--report] [--verbose] [--root DIR] [--allow FILE]
                               [--file-limit N] [--fn-limit N]
Exit status: 0 clean (or --report), 1 violations, 2 the check itself could not run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

FILE_LIMIT = 600
FN_LIMIT = 100

# ---------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------

IDENT, PUNCT, STR, CHAR, LIFETIME, NUM = "ident", "punct", "str", "char", "lifetime", "num"


@dataclass(slots=True)
class Tok:
    kind: str
    value: str
    line: int


def _is_ident_start(c: str) -> bool:
    return c == "_" or c.isalpha()


def _is_ident_char(c: str) -> bool:
    return c == "_" or c.isalnum()


def tokenize(src: str) -> tuple[list[Tok], list[str]]:
    """Rust source -> tokens, with comments dropped and literals collapsed to one token.

    Returns (tokens, warnings). Strings (plain, byte, C, raw with any number of #) become
    one STR token, char and byte literals one CHAR token, lifetimes and loop labels one
    LIFETIME token. Line and (nested) block comments vanish. Line numbers are 1-based.
    """
    toks: list[Tok] = []
    warnings: list[str] = []
    n = len(src)
    i = 0
    line = 1
    if src.startswith("\ufeff"):
        i = 1
    if src.startswith("#!", i) and not src.startswith("#![", i):  # shebang
        while i < n and src[i] != "\n":
            i += 1

    def skip_quoted(j: int, quote: str) -> int:
        """j is just after the opening quote; return the index after the closing one."""
        nonlocal line
        while j < n:
            c = src[j]
            if c == "\\":
                if j + 1 < n and src[j + 1] == "\n":
                    line += 1
                j += 2
                continue
            if c == "\n":
                line += 1
            elif c == quote:
                return j + 1
            j += 1
        warnings.append(f"line {line}: unterminated literal")
        return n

    def skip_raw(j: int) -> int | None:
        """j at the first '#' or '"' after r/br/cr; return index after the raw string,
        or None if this is not a raw string (e.g. the raw identifier r#match)."""
        nonlocal line
        hashes = 0
        while j < n and src[j] == "#":
            hashes += 1
            j += 1
        if j >= n or src[j] != '"':
            return None
        j += 1
        closing = '"' + "#" * hashes
        end = src.find(closing, j)
        if end < 0:
            warnings.append(f"line {line}: unterminated raw string")
            line += src.count("\n", j)
            return n
        line += src.count("\n", j, end)
        return end + len(closing)

    while i < n:
        c = src[i]
        if c == "\n":
            line += 1
            i += 1
            continue
        if c in " \t\r\f\v":
            i += 1
            continue
        if c == "/" and i + 1 < n and src[i + 1] == "/":
            end = src.find("\n", i)
            i = n if end < 0 else end
            continue
        if c == "/" and i + 1 < n and src[i + 1] == "*":
            depth = 1
            start_line = line
            i += 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth += 1
                    i += 2
                elif src.startswith("*/", i):
                    depth -= 1
                    i += 2
                else:
                    if src[i] == "\n":
                        line += 1
                    i += 1
            if depth:
                warnings.append(f"line {start_line}: unterminated block comment")
            continue
        if c == '"':
            start_line = line
            i = skip_quoted(i + 1, '"')
            toks.append(Tok(STR, '""', start_line))
            continue
        if c == "'":
            # Char literal or lifetime/label. '\x..' and 'c' are chars; 'abc (not closed
            # right after one char) is a lifetime.
            if i + 1 < n and src[i + 1] == "\\":
                start_line = line
                i = _skip_char_escape(src, i)
                toks.append(Tok(CHAR, "''", start_line))
                continue
            if i + 2 < n and src[i + 2] == "'" and src[i + 1] != "\n":
                toks.append(Tok(CHAR, "''", line))
                i += 3
                continue
            j = i + 1
            while j < n and _is_ident_char(src[j]):
                j += 1
            if j == i + 1:
                # A lone quote: not valid Rust outside macros; keep going.
                toks.append(Tok(PUNCT, "'", line))
                i += 1
                continue
            toks.append(Tok(LIFETIME, src[i:j], line))
            i = j
            continue
        if _is_ident_start(c):
            j = i + 1
            while j < n and _is_ident_char(src[j]):
                j += 1
            word = src[i:j]
            nxt = src[j] if j < n else ""
            if word in ("r", "br", "cr") and nxt in ('"', "#"):
                start_line = line
                end = skip_raw(j)
                if end is not None:
                    toks.append(Tok(STR, '""', start_line))
                    i = end
                    continue
                if word == "r" and nxt == "#" and j + 1 < n and _is_ident_start(src[j + 1]):
                    k = j + 1
                    while k < n and _is_ident_char(src[k]):
                        k += 1
                    toks.append(Tok(IDENT, src[j + 1 : k], line))  # raw identifier
                    i = k
                    continue
            if word in ("b", "c") and nxt == '"':
                start_line = line
                i = skip_quoted(j + 1, '"')
                toks.append(Tok(STR, '""', start_line))
                continue
            if word == "b" and nxt == "'":
                start_line = line
                if j + 1 < n and src[j + 1] == "\\":
                    i = _skip_char_escape(src, j)
                else:
                    end = src.find("'", j + 1)
                    i = n if end < 0 else end + 1
                toks.append(Tok(CHAR, "''", start_line))
                continue
            toks.append(Tok(IDENT, word, line))
            i = j
            continue
        if c.isdigit():
            j = i + 1
            while j < n:
                d = src[j]
                if _is_ident_char(d):
                    j += 1
                elif d == "." and j + 1 < n and src[j + 1].isdigit():
                    j += 1
                else:
                    break
            toks.append(Tok(NUM, src[i:j], line))
            i = j
            continue
        two = src[i : i + 2]
        if two in ("::", "->", "=>"):
            toks.append(Tok(PUNCT, two, line))
            i += 2
            continue
        toks.append(Tok(PUNCT, c, line))
        i += 1
    return toks, warnings


def _skip_char_escape(src: str, i: int) -> int:
    """i at the opening quote of an escaped char literal ('\\n', '\\u{7b}', '\\'')."""
    n = len(src)
    j = i + 3  # past quote, backslash and the escaped character
    while j < n and src[j] != "'" and src[j] != "\n":
        j += 1
    return min(j + 1, n)


OPEN_FOR = {")": "(", "]": "[", "}": "{"}


def match_brackets(toks: list[Tok]) -> tuple[dict[int, int], list[str]]:
    """Index of each bracket token -> index of its partner (both directions)."""
    match: dict[int, int] = {}
    stack: list[int] = []
    warnings: list[str] = []
    for i, t in enumerate(toks):
        if t.kind != PUNCT:
            continue
        v = t.value
        if v in "([{":
            stack.append(i)
        elif v in ")]}":
            want = OPEN_FOR[v]
            if stack and toks[stack[-1]].value == want:
                j = stack.pop()
                match[i], match[j] = j, i
                continue
            # Mismatch: pop to the nearest opener of the right kind, if any.
            for k in range(len(stack) - 1, -1, -1):
                if toks[stack[k]].value == want:
                    warnings.append(f"line {t.line}: '{v}' closes '{want}' from line "
                                    f"{toks[stack[k]].line} past unclosed brackets")
                    j = stack[k]
                    del stack[k:]
                    match[i], match[j] = j, i
                    break
            else:
                warnings.append(f"line {t.line}: unmatched '{v}'")
    for j in stack:
        warnings.append(f"line {toks[j].line}: unclosed '{toks[j].value}'")
    return match, warnings


# ---------------------------------------------------------------------------------------
# Structural scan of one file
# ---------------------------------------------------------------------------------------


@dataclass
class FnInfo:
    name: str
    owner: str | None  # impl/trait type name, if any
    start: int  # line of the `fn` keyword
    end: int  # line of the closing brace

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass
class Ref:
    """A path that names something in this crate: crate::a::b, super::x, self::y."""

    line: int
    segs: tuple[str, ...]  # as written (after use-tree expansion), e.g. ('crate','a','F')
    scope: tuple[str, ...]  # inline modules enclosing the reference, inside this file
    in_use: bool  # from a `use` item


@dataclass
class UseItem:
    """One leaf of a module-level `use` tree: name -> path. For re-export resolution."""

    line: int
    segs: tuple[str, ...]
    name: str  # the name it binds ('*' for globs)
    scope: tuple[str, ...]


@dataclass
class ModDecl:
    name: str
    line: int
    scope: tuple[str, ...]  # inline modules enclosing the declaration
    test: bool
    path_attr: str | None


@dataclass
class FileScan:
    fns: list[FnInfo] = field(default_factory=list)
    refs: list[Ref] = field(default_factory=list)
    uses: list[UseItem] = field(default_factory=list)
    mod_decls: list[ModDecl] = field(default_factory=list)
    inline_mods: list[tuple[str, ...]] = field(default_factory=list)
    file_test: bool = False  # #![cfg(test)] at the top
    warnings: list[str] = field(default_factory=list)


PATH_ROOTS = ("crate", "super", "self")
ITEM_START_PREV = {None, ";", "{", "}", "]", "unsafe", "default"}


def _cfg_is_test_only(toks: list[Tok]) -> bool:
    """toks is a cfg predicate: test | all(..., test, ...) (anything else is not)."""
    if not toks:
        return False
    if len(toks) == 1:
        return toks[0].kind == IDENT and toks[0].value == "test"
    if toks[0].kind == IDENT and toks[0].value == "all" and toks[1].value == "(":
        parts, depth, cur = [], 0, []
        for t in toks[2:-1]:
            if t.kind == PUNCT and t.value in "([":
                depth += 1
            elif t.kind == PUNCT and t.value in ")]":
                depth -= 1
            if depth == 0 and t.kind == PUNCT and t.value == ",":
                parts.append(cur)
                cur = []
            else:
                cur.append(t)
        parts.append(cur)
        return any(_cfg_is_test_only(p) for p in parts)
    return False


def _attr_is_cfg_test(attr: list[Tok]) -> bool:
    if len(attr) >= 3 and attr[0].value == "cfg" and attr[1].value == "(" and attr[-1].value == ")":
        return _cfg_is_test_only(attr[2:-1])
    return False


def scan_file(src: str) -> FileScan:
    toks, warnings = tokenize(src)
    match, w2 = match_brackets(toks)
    res = FileScan(warnings=warnings + w2)
    path_attr_values = _path_attr_strings(src)
    n = len(toks)

    def val(k: int) -> str | None:
        return toks[k].value if 0 <= k < n else None

    def is_punct(k: int, v: str) -> bool:
        return 0 <= k < n and toks[k].kind == PUNCT and toks[k].value == v

    def is_ident(k: int, v: str | None = None) -> bool:
        return 0 <= k < n and toks[k].kind == IDENT and (v is None or toks[k].value == v)

    def find_body(k: int) -> int:
        """From k, skip (..) and [..]; return index of the first '{' or ';' (or n)."""
        while k < n:
            t = toks[k]
            if t.kind == PUNCT:
                if t.value in "([" and k in match:
                    k = match[k] + 1
                    continue
                if t.value in "{;":
                    return k
                if t.value in ")]}":
                    return n  # ran out of the enclosing construct
            k += 1
        return n

    def impl_type(k: int, body: int) -> str | None:
        """Name of the type an `impl` at k is for (last path ident before generics)."""
        j = k + 1
        if is_punct(j, "<"):  # impl<...>
            depth = 0
            while j < body:
                if is_punct(j, "<"):
                    depth += 1
                elif is_punct(j, ">"):
                    depth -= 1
                    if depth == 0:
                        j += 1
                        break
                j += 1
        seg = toks[j:body]
        for idx, t in enumerate(seg):
            if t.kind == IDENT and t.value == "for":
                seg = seg[idx + 1 :]
                break
        name = None
        depth = 0
        for t in seg:
            if t.kind == PUNCT and t.value == "<":
                depth += 1
            elif t.kind == PUNCT and t.value == ">":
                depth -= 1
            elif t.kind == IDENT and t.value == "where" and depth == 0:
                break
            elif t.kind == IDENT and depth == 0 and t.value not in ("dyn", "mut", "const"):
                name = t.value
        return name

    def parse_path(k: int, prefix: tuple[str, ...], out: list[tuple[int, tuple[str, ...], str]]) -> int:
        """Parse a path / use tree starting at k; append (line, segs, bound_name) leaves.
        Returns the index after it."""
        segs = list(prefix)
        line = toks[k].line if k < n else 0
        if is_punct(k, "::"):
            k += 1
        while k < n:
            t = toks[k]
            if t.kind == IDENT:
                segs.append(t.value)
                line = t.line
                k += 1
                if is_punct(k, "::"):
                    k += 1
                    continue
                break
            if t.kind == PUNCT and t.value == "{" and k in match:
                close = match[k]
                j = k + 1
                while j < close:
                    if is_punct(j, ","):
                        j += 1
                        continue
                    before = j
                    j = parse_path(j, tuple(segs), out)
                    if j == before:
                        j += 1
                return close + 1
            if t.kind == PUNCT and t.value == "*":
                out.append((t.line, tuple(segs), "*"))
                return k + 1
            break
        if not segs or tuple(segs) == prefix:
            return k
        alias = None
        if is_ident(k, "as") and k + 1 < n:
            alias = toks[k + 1].value
            k += 2
        if segs[-1] == "self" and len(segs) > 1:
            segs.pop()
        out.append((line, tuple(segs), alias or segs[-1]))
        return k

    # Frames: (close_index, kind, name). kind in mod/fn/impl/trait.
    frames: list[tuple[int, str, str | None]] = []
    pending: list[list[Tok]] = []
    pending_path: str | None = None
    i = 0
    while i < n:
        while frames and i > frames[-1][0]:
            frames.pop()
        t = toks[i]
        prev = toks[i - 1].value if i > 0 else None
        scope = tuple(f[2] for f in frames if f[1] == "mod")
        at_module_level = not frames or frames[-1][1] == "mod"
        if t.kind == PUNCT and t.value == "#":
            inner = is_punct(i + 1, "!")
            o = i + 2 if inner else i + 1
            if is_punct(o, "[") and o in match:
                close = match[o]
                attr = toks[o + 1 : close]
                if inner:
                    if not frames and _attr_is_cfg_test(attr):
                        res.file_test = True
                else:
                    pending.append(attr)
                    if attr and attr[0].value == "path":
                        pending_path = path_attr_values.get(attr[0].line)
                    # Paths in attributes are code too: #[arg(value_parser = super::parse)].
                    k = o + 1
                    while k < close:
                        if (toks[k].kind == IDENT and toks[k].value in PATH_ROOTS
                                and is_punct(k + 1, "::") and not is_punct(k - 1, "::")):
                            leaves = []
                            k = max(parse_path(k, (), leaves), k + 1)
                            res.refs.extend(Ref(ln, segs, scope, False) for ln, segs, _ in leaves)
                        else:
                            k += 1
                i = close + 1
                continue
        if t.kind == IDENT:
            v = t.value
            if v == "mod" and is_ident(i + 1) and (is_punct(i + 2, "{") or is_punct(i + 2, ";")):
                test = any(_attr_is_cfg_test(a) for a in pending)
                name = toks[i + 1].value
                if is_punct(i + 2, ";"):
                    res.mod_decls.append(ModDecl(name, t.line, scope, test, pending_path))
                    i += 3
                elif test:
                    i = match.get(i + 2, n - 1) + 1
                else:
                    res.inline_mods.append(scope + (name,))
                    frames.append((match.get(i + 2, n - 1), "mod", name))
                    i += 3
                pending, pending_path = [], None
                continue
            if v == "fn" and is_ident(i + 1):
                test = any(_attr_is_cfg_test(a) for a in pending)
                pending, pending_path = [], None
                body = find_body(i + 2)
                if body < n and toks[body].value == "{" and body in match:
                    if test:
                        i = match[body] + 1
                        continue
                    owner = next((f[2] for f in reversed(frames) if f[1] in ("impl", "trait")), None)
                    # A fn nested in a fn body belongs to no impl.
                    for f in reversed(frames):
                        if f[1] == "fn":
                            owner = None
                            break
                        if f[1] in ("impl", "trait", "mod"):
                            break
                    res.fns.append(FnInfo(toks[i + 1].value, owner, t.line, toks[match[body]].line))
                    frames.append((match[body], "fn", toks[i + 1].value))
                i += 2  # keep scanning the signature for paths
                continue
            if (v == "impl" and prev in ITEM_START_PREV) or (v == "trait" and not is_punct(i - 1, "::")):
                test = any(_attr_is_cfg_test(a) for a in pending)
                pending, pending_path = [], None
                body = find_body(i + 1)
                if body < n and toks[body].value == "{" and body in match:
                    if test:
                        i = match[body] + 1
                        continue
                    name = impl_type(i, body) if v == "impl" else (val(i + 1) if is_ident(i + 1) else None)
                    frames.append((match[body], v, name))
                i += 1
                continue
            if v == "use" and prev != "::" and not is_punct(i + 1, "<"):  # not `+ use<'a>`
                test = any(_attr_is_cfg_test(a) for a in pending)
                pending, pending_path = [], None
                leaves: list[tuple[int, tuple[str, ...], str]] = []
                start = i + 2 if is_punct(i + 1, "$") else i + 1  # use $crate::x in macros
                j = parse_path(start, (), leaves)
                if not test:
                    for line, segs, name in leaves:
                        if segs and segs[0] in PATH_ROOTS:
                            res.refs.append(Ref(line, segs, scope, True))
                        if at_module_level:
                            res.uses.append(UseItem(line, segs, name, scope))
                i = j + 1 if is_punct(j, ";") else max(j, i + 1)
                continue
            if v in PATH_ROOTS and is_punct(i + 1, "::") and prev != "::":
                if prev == "in" and is_punct(i - 2, "("):  # pub(in crate::a): not a use
                    i += 1
                    continue
                leaves = []
                j = parse_path(i, (), leaves)
                for line, segs, _name in leaves:
                    res.refs.append(Ref(line, segs, scope, False))
                i = max(j, i + 1)
                continue
        if t.kind == PUNCT and t.value in (";", "{", "}", ","):
            pending, pending_path = [], None
        i += 1
    return res


def _path_attr_strings(src: str) -> dict[int, str]:
    """Line -> value of a #[path = "..."] attribute starting on that line (rare)."""
    out: dict[int, str] = {}
    if "path" not in src:
        return out
    for lineno, text in enumerate(src.splitlines(), 1):
        s = text.strip()
        if s.startswith("#[path") and "=" in s and '"' in s:
            try:
                out[lineno] = s.split('"')[1]
            except IndexError:
                pass
    return out


# ---------------------------------------------------------------------------------------
# Workspace model
# ---------------------------------------------------------------------------------------


class ConfigError(Exception):
    pass


@dataclass
class Member:
    dir: Path  # absolute
    rel: str  # relative to the workspace root, posix
    name: str  # package name
    toml: dict


def load_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"cannot parse {path}: {e}") from e


def rel(root: Path, p: Path) -> str:
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def read_members(root: Path, notes: list[str]) -> tuple[dict, list[Member]]:
    root_toml = load_toml(root / "Cargo.toml")
    ws = root_toml.get("workspace")
    if not isinstance(ws, dict):
        raise ConfigError(f"{root / 'Cargo.toml'} has no [workspace] table")
    patterns = ws.get("members", [])
    excludes = {(root / e).resolve() for e in ws.get("exclude", [])}
    dirs: list[Path] = []
    if "package" in root_toml:
        dirs.append(root)
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            found = sorted(p for p in root.glob(pat) if (p / "Cargo.toml").is_file())
            if not found:
                notes.append(f"workspace member pattern {pat!r} matches nothing")
            dirs.extend(found)
        else:
            dirs.append(root / pat)
    members = []
    seen = set()
    for d in dirs:
        rd = d.resolve()
        if rd in seen or rd in excludes:
            continue
        seen.add(rd)
        if not (d / "Cargo.toml").is_file():
            notes.append(f"workspace member {rel(root, d)} has no Cargo.toml (skipped)")
            continue
        t = load_toml(d / "Cargo.toml")
        name = t.get("package", {}).get("name", d.name)
        members.append(Member(rd, rel(root, d) or ".", name, t))
    return root_toml, members


# ---------------------------------------------------------------------------------------
# Rule 1 and 2: file and function lengths, with the allowlist
# ---------------------------------------------------------------------------------------


@dataclass
class Allow:
    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (limit, line)
    fns: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    used: set = field(default_factory=set)


def load_allow(path: Path, shown: str) -> Allow:
    allow = Allow()
    if not path.is_file():
        return allow
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        where = f"{shown}:{lineno}"
        if len(parts) != 3 or parts[0] not in ("file", "fn") or not parts[2].isdigit():
            allow.errors.append(f"{where}: cannot parse {raw.strip()!r} "
                                "(want 'file PATH LINES' or 'fn PATH.rs::NAME LINES')")
            continue
        kind, target, limit = parts[0], parts[1].removeprefix("./"), int(parts[2])
        if kind == "file":
            allow.files[target] = (limit, lineno)
        else:
            k = target.find(".rs::")
            if k < 0 or not target[k + 5 :]:
                allow.errors.append(f"{where}: fn entry {target!r} is not PATH.rs::NAME")
                continue
            allow.fns[(target[: k + 3], target[k + 5 :])] = (limit, lineno)
    return allow


# ---------------------------------------------------------------------------------------
# Rule 3: module graph
# ---------------------------------------------------------------------------------------


@dataclass
class ModFile:
    path: Path
    module: tuple[str, ...]
    mod_rs: bool  # children live in the file's own directory (lib.rs, main.rs, mod.rs)
    test: bool


@dataclass
class Target:
    label: str  # "proxy", or "proxy (src/bin/x.rs)"
    root_file: Path
    files: list[ModFile]
    modules: set[tuple[str, ...]]
    uses: dict[tuple[str, ...], list[UseItem]]


def build_target(label: str, root_file: Path, scans: "ScanCache", root: Path, notes: list[str]) -> Target:
    files: list[ModFile] = []
    modules: set[tuple[str, ...]] = {()}
    uses: dict[tuple[str, ...], list[UseItem]] = defaultdict(list)
    seen: set[Path] = set()
    queue = deque([ModFile(root_file, (), True, False)])
    while queue:
        mf = queue.popleft()
        rp = mf.path.resolve()
        if rp in seen:
            continue
        seen.add(rp)
        sc = scans.get(mf.path)
        if sc is None:
            continue
        mf.test = mf.test or sc.file_test
        files.append(mf)
        for im in sc.inline_mods:
            modules.add(mf.module + im)
        for u in sc.uses:
            uses[mf.module + u.scope].append(u)
        base = mf.path.parent if mf.mod_rs else mf.path.parent / mf.path.stem
        for d in sc.mod_decls:
            child = mf.module + d.scope + (d.name,)
            modules.add(child)
            if d.path_attr:
                # Outside inline modules a path is relative to the declaring file's dir.
                pdir = mf.path.parent if not d.scope else base.joinpath(*d.scope)
                cands = [(pdir / d.path_attr, True)]
            else:
                ddir = base.joinpath(*d.scope)
                cands = [(ddir / f"{d.name}.rs", False), (ddir / d.name / "mod.rs", True)]
            for p, is_mod_rs in cands:
                if p.is_file():
                    queue.append(ModFile(p, child, is_mod_rs or p.name == "mod.rs", mf.test or d.test))
                    break
            else:
                notes.append(f"{rel(root, mf.path)}:{d.line}: `mod {d.name};` has no file "
                             f"({' or '.join(rel(root, c) for c, _ in cands)})")
    return Target(label, root_file, files, modules, uses)


class ScanCache:
    def __init__(self, root: Path, notes: list[str]):
        self.root = root
        self.notes = notes
        self.cache: dict[Path, FileScan | None] = {}
        self.text: dict[Path, str] = {}

    def source(self, path: Path) -> str | None:
        rp = path.resolve()
        if rp not in self.text:
            try:
                self.text[rp] = path.read_text(encoding="utf-8", errors="replace")
            except OSError as e:
                self.notes.append(f"cannot read {rel(self.root, path)}: {e}")
                return None
        return self.text[rp]

    def get(self, path: Path) -> FileScan | None:
        rp = path.resolve()
        if rp not in self.cache:
            src = self.source(path)
            if src is None:
                self.cache[rp] = None
            else:
                sc = scan_file(src)
                for w in sc.warnings:
                    self.notes.append(f"{rel(self.root, path)}: scanner: {w}")
                self.cache[rp] = sc
        return self.cache[rp]


@dataclass
class Edge:
    refs: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, path text)


def resolve_ref(t: Target, module: tuple[str, ...], segs: tuple[str, ...]) -> tuple[str, ...] | None:
    """Absolute module a path points into (deepest module prefix, through use/re-exports)."""
    head = segs[0]
    if head == "crate":
        absolute = segs[1:]
    elif head == "self":
        absolute = module + segs[1:]
    elif head == "super":
        k = 0
        while k < len(segs) and segs[k] == "super":
            k += 1
        if k > len(module):
            return None
        absolute = module[: len(module) - k] + segs[k:]
    else:
        return None
    return _walk(t, absolute, 0)


def _walk(t: Target, absolute: tuple[str, ...], depth: int) -> tuple[str, ...]:
    cur: tuple[str, ...] = ()
    for idx, s in enumerate(absolute):
        nxt = cur + (s,)
        if nxt in t.modules:
            cur = nxt
            continue
        if depth < 8:
            # A name imported into `cur` (e.g. lib.rs `pub use svid::Svid`): follow it.
            for u in t.uses.get(cur, ()):
                if u.name == s and u.name != "*":
                    target = _use_absolute(t, cur, u.segs)
                    if target is not None and target != absolute[: idx + 1]:
                        return _walk(t, target + absolute[idx + 1 :], depth + 1)
        break
    return cur


def _use_absolute(t: Target, module: tuple[str, ...], segs: tuple[str, ...]) -> tuple[str, ...] | None:
    if not segs:
        return None
    head = segs[0]
    if head == "crate":
        return segs[1:]
    if head == "self":
        return module + segs[1:]
    if head == "super":
        k = 0
        while k < len(segs) and segs[k] == "super":
            k += 1
        return module[: len(module) - k] + segs[k:] if k <= len(module) else None
    if module + (head,) in t.modules:  # 2018 relative path to a child module
        return module + segs
    return None


def module_edges(t: Target, root: Path, scans: "ScanCache") -> dict[tuple[str, ...], dict[tuple[tuple[str, ...], tuple[str, ...]], Edge]]:
    """parent module -> {(child_a, child_b): Edge}: child_a's subtree uses child_b's."""
    levels: dict = defaultdict(lambda: defaultdict(Edge))
    for mf in t.files:
        if mf.test:
            continue
        sc = scans.get(mf.path)
        if sc is None:
            continue
        for r in sc.refs:
            src_mod = mf.module + r.scope
            tgt = resolve_ref(t, src_mod, r.segs)
            if tgt is None:
                continue
            common = 0
            while common < min(len(src_mod), len(tgt)) and src_mod[common] == tgt[common]:
                common += 1
            if common == len(src_mod) or common == len(tgt):
                continue  # same module, ancestor or descendant
            parent = src_mod[:common]
            a, b = src_mod[: common + 1], tgt[: common + 1]
            levels[parent][(a, b)].refs.append((rel(root, mf.path), r.line, "::".join(r.segs)))
    return levels


def sccs(nodes: list, succ: dict) -> list[list]:
    """Tarjan, iterative. Returns components with more than one node, each sorted."""
    index: dict = {}
    low: dict = {}
    on: set = set()
    stack: list = []
    out: list[list] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(succ.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(succ.get(w, ())))))
                    advanced = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def cover_cycles(comp: list, edges: set) -> list[list]:
    """Elementary cycles (as node lists, first node repeated at the end) that together
    use every edge inside the component; shortest first."""
    inside = {(a, b) for (a, b) in edges if a in comp and b in comp}
    succ: dict = defaultdict(list)
    for a, b in sorted(inside):
        succ[a].append(b)

    def back_path(src, dst):  # shortest path src -> dst inside the component
        prev = {src: None}
        q = deque([src])
        while q:
            v = q.popleft()
            if v == dst:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return path[::-1]
            for w in succ[v]:
                if w not in prev:
                    prev[w] = v
                    q.append(w)
        return None

    uncovered = set(inside)
    cycles = []
    while uncovered:
        best = None
        for a, b in sorted(uncovered):
            p = back_path(b, a)
            if p is not None and (best is None or len(p) < len(best)):
                best = [a] + p
        if best is None:
            break
        # rotate to start at the smallest node, for stable output
        body = best[:-1]
        k = body.index(min(body))
        body = body[k:] + body[:k]
        cyc = body + [body[0]]
        cycles.append(cyc)
        for x, y in zip(cyc, cyc[1:]):
            uncovered.discard((x, y))
    return cycles


def fmt_mod(m: tuple[str, ...]) -> str:
    return "::".join(m) if m else "(crate root)"


def fmt_ref(e: Edge) -> str:
    refs = sorted(e.refs, key=lambda r: (r[0], r[1]))
    f, line, text = refs[0]
    more = f" +{len(refs) - 1} more" if len(refs) > 1 else ""
    return f"{f}:{line} {text}{more}"


# ---------------------------------------------------------------------------------------
# Rule 4: crate graph
# ---------------------------------------------------------------------------------------

DEP_KINDS = (("dependencies", "normal"), ("build-dependencies", "build"), ("dev-dependencies", "dev"))


def crate_deps(root: Path, root_toml: dict, members: list[Member]):
    """[(from_name, to_name, kind, where)] for dependencies on other members."""
    by_dir = {m.dir: m for m in members}
    ws_deps = root_toml.get("workspace", {}).get("dependencies", {})
    out = []

    def target_of(m: Member, key: str, spec) -> Member | None:
        if not isinstance(spec, dict):
            return None
        if spec.get("workspace") is True:
            wspec = ws_deps.get(key)
            if isinstance(wspec, dict) and "path" in wspec:
                return by_dir.get((root / wspec["path"]).resolve())
            return None
        if "path" in spec:
            return by_dir.get((m.dir / spec["path"]).resolve())
        return None

    for m in members:
        tables = []
        for section, kind in DEP_KINDS:
            tables.append((section, kind, m.toml.get(section, {})))
            alt = m.toml.get(section.replace("-", "_"))
            if isinstance(alt, dict):
                tables.append((section.replace("-", "_"), kind, alt))
        for tname, tspec in m.toml.get("target", {}).items():
            for section, kind in DEP_KINDS:
                if isinstance(tspec, dict) and section in tspec:
                    tables.append((f"target.{tname}.{section}", kind, tspec[section]))
        for section, kind, table in tables:
            if not isinstance(table, dict):
                continue
            for key, spec in table.items():
                dep = target_of(m, key, spec)
                if dep is not None and dep is not m:
                    out.append((m.name, dep.name, kind, f"{m.rel}/Cargo.toml [{section}] {key}"))
    return out


# ---------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------


def rust_files(src_dir: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(src_dir):
        dirnames.sort()
        for fn in sorted(filenames):
            if fn.endswith(".rs"):
                out.append(Path(dirpath) / fn)
    return out


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(
        prog="layout_check.py",
        description="Check ward's workspace layout: file and function lengths, module "
        "import cycles inside crates, crate dependency cycles.",
    )
    ap.add_argument("--report", action="store_true",
                    help="print everything found (allowlisted items too) but exit 0")
    ap.add_argument("--verbose", "-v", action="store_true",
                    help="also print each crate's module graph and the crate dependency graph")
    ap.add_argument("--root", type=Path, default=here.parent,
                    help="workspace root (default: the parent of this script's directory)")
    ap.add_argument("--allow", type=Path, default=None,
                    help="allowlist file (default: scripts/layout_allow.txt under the root)")
    ap.add_argument("--file-limit", type=int, default=FILE_LIMIT, help="max lines per file (600)")
    ap.add_argument("--fn-limit", type=int, default=FN_LIMIT, help="max lines per function (100)")
    args = ap.parse_args(argv)

    root = args.root.resolve()
    notes: list[str] = []
    try:
        root_toml, members = read_members(root, notes)
    except ConfigError as e:
        print(f"layout: error: {e}", file=sys.stderr)
        return 2
    allow_path = args.allow if args.allow is not None else root / "scripts" / "layout_allow.txt"
    allow = load_allow(allow_path, rel(root, allow_path))
    scans = ScanCache(root, notes)

    problems: list[str] = []  # violation lines
    allowed: list[str] = []  # would-be violations covered by the allowlist
    counts = defaultdict(int)
    verbose: list[str] = []

    def file_line(path: str, lines: int) -> None:
        entry = allow.files.get(path)
        if entry:
            allow.used.add(("file", path))
            limit, where = entry
            if lines <= limit:
                allowed.append(f"layout: allowed: {path} has {lines} lines (limit {args.file_limit}, "
                               f"allowed {limit} by {rel(root, allow_path)}:{where})")
                return
            problems.append(f"layout: {path} has {lines} lines (limit {limit} from "
                            f"{rel(root, allow_path)}:{where}; default {args.file_limit})")
        else:
            problems.append(f"layout: {path} has {lines} lines (limit {args.file_limit})")
        counts["files"] += 1

    def fn_line(path: str, f: FnInfo) -> None:
        keys = [(path, f.name)] + ([(path, f"{f.owner}::{f.name}")] if f.owner else [])
        entry = next(((k, allow.fns[k]) for k in keys if k in allow.fns), None)
        what = f"layout: {path}::{f.name} is {f.length} lines"
        if entry:
            k, (limit, where) = entry
            allow.used.add(("fn",) + k)
            if f.length <= limit:
                allowed.append(f"layout: allowed: {path}::{f.name} is {f.length} lines (limit "
                               f"{args.fn_limit}, allowed {limit} by {rel(root, allow_path)}:{where}) "
                               f"at line {f.start}")
                return
            problems.append(f"{what} (limit {limit} from {rel(root, allow_path)}:{where}) at line {f.start}")
        else:
            problems.append(f"{what} (limit {args.fn_limit}) at line {f.start}")
        counts["fns"] += 1

    # Targets first: they decide which files are test-only.
    targets: dict[str, list[Target]] = {}
    test_files: set[Path] = set()
    reached: set[Path] = set()
    for m in members:
        src = m.dir / "src"
        ts = []
        lib, main_rs = src / "lib.rs", src / "main.rs"
        roots = []
        if lib.is_file():
            roots.append((m.rel, lib))
        if main_rs.is_file():
            roots.append((m.rel if not lib.is_file() else f"{m.rel} (src/main.rs)", main_rs))
        bindir = src / "bin"
        if bindir.is_dir():
            for p in sorted(bindir.iterdir()):
                if p.suffix == ".rs" and p.is_file():
                    roots.append((f"{m.rel} ({rel(m.dir, p)})", p))
                elif (p / "main.rs").is_file():
                    roots.append((f"{m.rel} ({rel(m.dir, p / 'main.rs')})", p / "main.rs"))
        reached_non_test: set[Path] = set()
        reached_test: set[Path] = set()
        for label, rf in roots:
            t = build_target(label, rf, scans, root, notes)
            ts.append(t)
            for mf in t.files:
                (reached_test if mf.test else reached_non_test).add(mf.path.resolve())
        test_files |= reached_test - reached_non_test
        reached |= reached_test | reached_non_test
        targets[m.rel] = ts

    # Rules 1 and 2.
    for m in members:
        src = m.dir / "src"
        if not src.is_dir():
            continue
        for p in rust_files(src):
            path = rel(root, p)
            text = scans.source(p)
            if text is None:
                continue
            nlines = len(text.splitlines())
            if nlines > args.file_limit:
                file_line(path, nlines)
            if p.resolve() not in reached:
                notes.append(f"{path} is not part of any target (no `mod` declares it); "
                             "checked for lengths only")
            if p.resolve() in test_files:
                continue
            sc = scans.get(p)
            if sc is None or sc.file_test:
                continue
            for f in sc.fns:
                if f.length > args.fn_limit:
                    fn_line(path, f)

    # Rule 3.
    cycle_lines: list[str] = []
    for m in members:
        for t in targets[m.rel]:
            levels = module_edges(t, root, scans)
            if args.verbose and len(t.modules) > 1:
                verbose.append(f"module graph of {t.label} (root {rel(root, t.root_file)}; "
                               f"{len(t.files)} files, {len(t.modules)} modules):")
                if not any(levels.values()):
                    verbose.append("    (no edges between modules)")
            for parent in sorted(levels):
                edges = levels[parent]
                succ: dict = defaultdict(set)
                for a, b in edges:
                    succ[a].add(b)
                nodes = sorted({a for a, _ in edges} | {b for _, b in edges})
                if args.verbose and edges:
                    level = "top level" if not parent else f"inside {fmt_mod(parent)}"
                    verbose.append(f"  {level}:")
                    for a in nodes:
                        if succ.get(a):
                            outs = ", ".join(f"{fmt_mod(b)} ({len(edges[(a, b)].refs)})"
                                             for b in sorted(succ[a]))
                            verbose.append(f"    {fmt_mod(a)} -> {outs}")
                label = t.label if not parent else f"{t.label} (inside {fmt_mod(parent)})"
                for comp in sccs(nodes, succ):
                    counts["cycles"] += 1
                    cycles = cover_cycles(comp, set(edges))
                    if len(cycles) > 1:
                        cycle_lines.append(
                            f"layout: import cycle in {label}: {len(comp)} modules are tangled: "
                            f"{', '.join(fmt_mod(c) for c in comp)} "
                            f"({sum(1 for a, b in edges if a in comp and b in comp)} edges; "
                            f"the {len(cycles)} cycles below use each of them)")
                    for cyc in cycles:
                        parts = [fmt_mod(cyc[0])]
                        for a, b in zip(cyc, cyc[1:]):
                            parts.append(f"{fmt_mod(b)} ({fmt_ref(edges[(a, b)])})")
                        indent = "  " if len(cycles) > 1 else ""
                        cycle_lines.append(f"layout: {indent}import cycle in {label}: " + " -> ".join(parts))
    problems.extend(cycle_lines)

    # Rule 4.
    deps = crate_deps(root, root_toml, members)
    names = sorted(m.name for m in members)
    normal: dict = defaultdict(set)
    every: dict = defaultdict(set)
    where: dict = {}
    for a, b, kind, w in deps:
        every[a].add(b)
        where.setdefault((a, b, kind != "dev"), w)
        if kind != "dev":
            normal[a].add(b)

    def crate_cycle_lines(comps, succ, prefer_normal: bool, title: str):
        for comp in comps:
            es = {(a, b) for a in comp for b in succ.get(a, ()) if b in comp}
            for cyc in cover_cycles(comp, es):
                parts = [cyc[0]]
                for a, b in zip(cyc, cyc[1:]):
                    w = where.get((a, b, True)) if prefer_normal else None
                    w = w or where.get((a, b, True)) or where.get((a, b, False))
                    parts.append(f"{b} ({w})")
                problems.append(f"layout: {title}: " + " -> ".join(parts))
                counts["crate cycles"] += 1

    normal_comps = sccs(names, normal)
    crate_cycle_lines(normal_comps, normal, True, "crate dependency cycle")
    normal_sets = [set(c) for c in normal_comps]
    dev_comps = [c for c in sccs(names, every) if set(c) not in normal_sets]
    crate_cycle_lines(dev_comps, every, False, "crate dependency cycle through dev-dependencies")

    if args.verbose:
        verbose.append("crate dependency graph (normal and build; [dev] for dev-only):")
        for a in names:
            outs = sorted(every.get(a, ()))
            shown = [b if b in normal.get(a, ()) else f"{b} [dev]" for b in outs]
            verbose.append(f"  {a} -> {', '.join(shown) if shown else '(no workspace crates)'}")
        # Layers: 0 = depends on no member; n = one above its highest dependency.
        layer: dict = {}

        def depth(c, seen=()):
            if c in layer:
                return layer[c]
            if c in seen:
                return 0
            d = 0
            for b in normal.get(c, ()):
                d = max(d, depth(b, seen + (c,)) + 1)
            layer[c] = d
            return d

        for c in names:
            depth(c)
        for lv in sorted(set(layer.values())):
            verbose.append(f"  layer {lv}: {', '.join(c for c in names if layer[c] == lv)}")

    # Allowlist hygiene.
    for e in allow.errors:
        problems.append(f"layout: {e}")
    for path, (limit, lineno) in sorted(allow.files.items()):
        if ("file", path) not in allow.used:
            notes.append(f"{rel(root, allow_path)}:{lineno}: file {path} is not over the limit "
                         "or does not exist; the entry can go")
    for (path, name), (limit, lineno) in sorted(allow.fns.items()):
        if ("fn", path, name) not in allow.used:
            notes.append(f"{rel(root, allow_path)}:{lineno}: fn {path}::{name} is not over the "
                         "limit or does not exist; the entry can go")

    for line in problems:
        print(line)
    if args.report or args.verbose:
        for line in allowed:
            print(line)
    for line in verbose:
        print(line)
    for nline in notes:
        print(f"layout: note: {nline}", file=sys.stderr)
    summary = (f"{counts['files']} files over {args.file_limit} lines, {counts['fns']} functions "
               f"over {args.fn_limit} lines, {counts['cycles']} module import cycle groups, "
               f"{counts['crate cycles']} crate dependency cycles")
    if allow.errors:
        summary += f", {len(allow.errors)} bad allowlist lines"
    if problems:
        print(f"layout: {summary}", file=sys.stderr)
    elif args.verbose or args.report:
        print("layout: ok", file=sys.stderr)
    if args.report:
        return 0
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
