#!/usr/bin/env python3
"""Self-tests for layout_check.py: python3 scripts/test_layout_check.py (stdlib only)."""

import contextlib
import io
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the repo
sys.path.insert(0, str(Path(__file__).resolve().parent))

import layout_check as lc  # noqa: E402


def scan(src: str) -> lc.FileScan:
    return lc.scan_file(textwrap.dedent(src))


def fns(src: str) -> dict[str, tuple[int, int]]:
    return {f.name: (f.start, f.end) for f in scan(src).fns}


def refs(src: str) -> list[str]:
    return ["::".join(r.segs) for r in scan(src).refs]


class Tokenizer(unittest.TestCase):
    def kinds(self, src):
        toks, warnings = lc.tokenize(src)
        self.assertEqual(warnings, [])
        return [(t.kind, t.value) for t in toks]

    def test_string_with_braces_is_one_token(self):
        self.assertEqual(self.kinds('let s = "{ } {{";'),
                         [("ident", "let"), ("ident", "s"), ("punct", "="), ("str", '""'), ("punct", ";")])

    def test_escaped_quote_in_string(self):
        self.assertEqual(self.kinds(r'"a \" { \\" }'), [("str", '""'), ("punct", "}")])

    def test_raw_strings(self):
        self.assertEqual(self.kinds('r"{" r#"{"#  r##"a "# { "##  br#"}"# x'),
                         [("str", '""')] * 4 + [("ident", "x")])

    def test_raw_identifier_is_not_a_raw_string(self):
        self.assertEqual(self.kinds("r#fn r#match"), [("ident", "fn"), ("ident", "match")])

    def test_byte_and_c_strings(self):
        self.assertEqual(self.kinds("b\"{\" c\"}\" b'{' b'\\''"),
                         [("str", '""'), ("str", '""'), ("char", "''"), ("char", "''")])

    def test_char_literals(self):
        self.assertEqual(self.kinds(r"'{' '}' '\'' '\\' '\u{7b}' '\n'"), [("char", "''")] * 6)

    def test_lifetimes_and_labels(self):
        got = self.kinds("fn f<'a, 'b: 'a>(x: &'a str) -> &'static str { 'outer: loop { break 'outer; } }")
        self.assertIn(("lifetime", "'a"), got)
        self.assertIn(("lifetime", "'static"), got)
        self.assertIn(("lifetime", "'outer"), got)
        self.assertNotIn(("char", "''"), got)

    def test_lifetime_next_to_char(self):
        got = self.kinds("impl<'a> X<'a> { fn f(&'a self) -> char { '{' } }")
        self.assertEqual(got.count(("char", "''")), 1)
        self.assertEqual([v for k, v in got if k == "punct" and v in "{}"], ["{", "{", "}", "}"])

    def test_nested_block_comments(self):
        self.assertEqual(self.kinds("a /* { /* } */ { */ b // }\nc"),
                         [("ident", "a"), ("ident", "b"), ("ident", "c")])

    def test_line_numbers_survive_multiline_literals_and_comments(self):
        toks, _ = lc.tokenize('"a\nb"\n/* x\n y */ r#"\n"# z')
        self.assertEqual(toks[-1].value, "z")
        self.assertEqual(toks[-1].line, 5)


class FunctionLengths(unittest.TestCase):
    def test_plain_function(self):
        self.assertEqual(fns("""\
            fn a() {
                x();
            }
            """), {"a": (1, 3)})

    def test_braces_in_strings_chars_and_comments_do_not_count(self):
        got = fns("""\
            fn tricky<'a>(s: &'a str) -> &'a str {
                let _ = "}}}";
                let _ = r#"}"#;
                let _ = '}';
                let _ = b'}';
                // }
                /* } /* } */ } */
                'l: loop { break 'l; }
                s
            }
            fn after() {}
            """)
        self.assertEqual(got["tricky"], (1, 10))
        self.assertEqual(got["after"], (11, 11))

    def test_qualifiers_and_methods(self):
        got = fns("""\
            pub(crate) async fn a() {
            }
            const fn b() -> u8 { 1 }
            unsafe fn c() {}
            extern "C" fn d() {}
            pub async unsafe extern "C" fn e() {}
            impl<T: Clone> Foo<T> where T: Send {
                pub fn m(&self) -> impl Iterator<Item = [u8; 2]> {
                    std::iter::empty()
                }
            }
            """)
        self.assertEqual(set(got), {"a", "b", "c", "d", "e", "m"})
        self.assertEqual(got["a"], (1, 2))
        self.assertEqual(got["m"], (8, 10))
        self.assertEqual({f.name: f.owner for f in scan("impl<T> Tr for Foo<T> { fn m() {} }").fns}, {"m": "Foo"})

    def test_trait_declarations_without_body_are_not_functions(self):
        got = fns("""\
            trait T {
                fn decl(&self) -> u8;
                fn with_default(&self) -> u8 {
                    1
                }
            }
            extern "C" { fn ext(x: i32); }
            type F = fn(u8) -> u8;
            """)
        self.assertEqual(got, {"with_default": (3, 5)})

    def test_nested_functions_are_measured_separately(self):
        got = fns("""\
            fn outer() {
                fn inner() {
                }
            }
            """)
        self.assertEqual(got, {"outer": (1, 4), "inner": (2, 3)})

    def test_cfg_test_modules_are_skipped(self):
        got = fns("""\
            fn real() {}
            #[cfg(test)]
            mod tests {
                use super::*;
                fn helper() {}
                #[test]
                fn t() { helper() }
            }
            #[cfg(all(test, unix))]
            mod test {
                fn also_skipped() {}
            }
            #[cfg(not(test))]
            mod prod {
                fn kept() {}
            }
            """)
        self.assertEqual(set(got), {"real", "kept"})

    def test_cfg_test_file_module_is_recorded(self):
        decls = scan("#[cfg(test)]\nmod tests;\npub mod a;\n").mod_decls
        self.assertEqual([(d.name, d.test) for d in decls], [("tests", True), ("a", False)])


class References(unittest.TestCase):
    def test_grouped_use_with_nested_braces(self):
        self.assertEqual(refs("use crate::{a, b::{c, d}, e::{self, F as G}};"),
                         ["crate::a", "crate::b::c", "crate::b::d", "crate::e", "crate::e::F"])

    def test_multiline_grouped_use_lines(self):
        got = [(r.line, "::".join(r.segs)) for r in scan("use crate::{\n    a,\n    b::c,\n};").refs]
        self.assertEqual(got, [(2, "crate::a"), (3, "crate::b::c")])

    def test_expression_paths_super_and_self(self):
        self.assertEqual(refs("fn f() { crate::a::g(); super::b::h(); self::c::X; super::super::d(); }"),
                         ["crate::a::g", "super::b::h", "self::c::X", "super::super::d"])

    def test_comments_strings_and_visibility_are_not_edges(self):
        self.assertEqual(refs("""\
            // use crate::a;
            /// see [`crate::b`]
            /* crate::c */
            const S: &str = "crate::d";
            pub(in crate::e) fn f() {}
            pub(crate) fn g() {}
            """), [])

    def test_attribute_paths_count(self):
        self.assertEqual(refs("#[arg(value_parser = super::parse)]\nstruct A;"), ["super::parse"])

    def test_test_module_references_are_skipped(self):
        self.assertEqual(refs("""\
            use crate::a::X;
            #[cfg(test)]
            mod tests {
                use crate::b::Y;
                fn t() { crate::c::z(); }
            }
            """), ["crate::a::X"])

    def test_inline_module_scope(self):
        got = [(r.scope, "::".join(r.segs)) for r in scan("mod inner { use super::x; }").refs]
        self.assertEqual(got, [(("inner",), "super::x")])


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))


def run(root: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = lc.main(["--root", str(root), *args])
    return rc, out.getvalue()


class Workspace(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name)
        long_fn = "fn long() {\n" + "    x();\n" * 101 + "}\n"
        write(self.root, {
            "Cargo.toml": """\
                [workspace]
                members = ["one", "two"]
                [workspace.dependencies]
                w-one = { path = "one" }
                w-two = { path = "two" }
                """,
            "one/Cargo.toml": """\
                [package]
                name = "w-one"
                [dependencies]
                w-two.workspace = true
                """,
            "two/Cargo.toml": """\
                [package]
                name = "w-two"
                [dev-dependencies]
                w-one = { path = "../one" }
                """,
            "one/src/lib.rs": "pub mod a;\npub mod b;\npub mod server;\npub use b::Thing;\n",
            "one/src/a.rs": "use crate::Thing;\n",  # through the root re-export: a -> b
            "one/src/b.rs": "pub struct Thing;\nfn f() { crate::a::g(); }\n",
            "one/src/server/mod.rs": "mod x;\nmod y;\n#[cfg(test)]\nmod tests;\n",
            "one/src/server/x.rs": "use super::y::Y;\npub struct X;\n",
            "one/src/server/y.rs": "pub struct Y;\nfn f() -> super::x::X { todo!() }\n",
            "one/src/server/tests.rs": "use crate::a;\n" + long_fn,
            "two/src/lib.rs": long_fn + "// filler\n" * 600,
        })

    def tearDown(self):
        self.tmp.cleanup()

    def test_findings(self):
        rc, out = run(self.root)
        self.assertEqual(rc, 1)
        self.assertIn("layout: two/src/lib.rs has 703 lines (limit 600)", out)
        self.assertIn("layout: two/src/lib.rs::long is 103 lines (limit 100) at line 1", out)
        self.assertNotIn("tests.rs::long", out)  # only reached through #[cfg(test)]
        self.assertIn("layout: import cycle in one: a -> b (one/src/a.rs:1 crate::Thing) -> "
                      "a (one/src/b.rs:2 crate::a::g)", out)
        self.assertIn("layout: import cycle in one (inside server): server::x -> server::y "
                      "(one/src/server/x.rs:1 super::y::Y) -> server::x (one/src/server/y.rs:2 "
                      "super::x::X)", out)
        self.assertIn("layout: crate dependency cycle through dev-dependencies: w-one -> w-two "
                      "(one/Cargo.toml [dependencies] w-two) -> w-one (two/Cargo.toml "
                      "[dev-dependencies] w-one)", out)
        self.assertNotIn("layout: crate dependency cycle:", out)

    def test_report_exits_zero(self):
        rc, _ = run(self.root, "--report")
        self.assertEqual(rc, 0)

    def test_allowlist(self):
        write(self.root, {"scripts/layout_allow.txt": """\
            # comment
            file two/src/lib.rs 703   # generated
            fn two/src/lib.rs::long 103 # to split
            """})
        _, out = run(self.root)
        self.assertNotIn("layout: two/src/lib.rs", out)
        _, out = run(self.root, "--report")
        self.assertIn("layout: allowed: two/src/lib.rs has 703 lines", out)
        write(self.root, {"scripts/layout_allow.txt": "file two/src/lib.rs 650\nbogus line\n"})
        _, out = run(self.root)
        self.assertIn("layout: two/src/lib.rs has 703 lines (limit 650 from scripts/layout_allow.txt:1", out)
        self.assertIn("layout: scripts/layout_allow.txt:2: cannot parse", out)

    def test_normal_dependency_cycle(self):
        write(self.root, {"two/Cargo.toml": '[package]\nname = "w-two"\n[dependencies]\nw-one = { path = "../one" }\n'})
        _, out = run(self.root)
        self.assertIn("layout: crate dependency cycle: w-one -> w-two", out)
        self.assertNotIn("through dev-dependencies", out)


if __name__ == "__main__":
    unittest.main()
