#!/usr/bin/env python3
"""Checks that a schema is a compatible evolution of its frozen copy (rules: schemas/envelope.fbs).

  check_conform.py --flatc FLATC FROZEN.fbs CURRENT.fbs
  check_conform.py --flatc FLATC -I DIR --map-namespace bus.wire.next=bus.wire BASE.fbs NEXT.fbs
  check_conform.py --flatc FLATC --self-test

--map-namespace checks a schema kept in its own namespace (tests/schemas/envelope_next.fbs)
against the one it evolves: CURRENT is copied with that namespace renamed; -I finds its includes.

Step 1 is `flatc --conform FROZEN --conform-includes <dir of FROZEN> -I <dir of CURRENT> CURRENT`.
flatc 2.0.8 exits 1 and prints "error: schemas don't conform: <reason>" for what it detects:
a field inserted in the middle ("field renamed to different type" / "offsets differ"), a retyped
table or struct field ("types differ for field"), a changed default, an enum or union member
inserted or reordered ("values differ for enum"). It exits 0 on identical schemas and on
appended fields / enum values / union members. But flatc 2.0.8 also exits 0 (prints nothing) on
these violations of our rules, so step 2 checks them on a light parse of both files:
  * a changed struct that keeps its field offsets and types: array length changed
    ([ubyte:8] -> [ubyte:4]) or a field appended (struct size grows);
  * the last field of a table, or the last value of an enum/union, removed;
  * file_identifier or root_type changed;
  * (required) added to an existing field, or an appended field that is (required): both make
    new readers reject what old writers send.
Table field / enum value renames are reported too: keep the old name (JSON tools depend on it).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

DECL = re.compile(r'\b(table|struct|enum|union)\s+([A-Za-z_]\w*)([^{]*)\{([^}]*)\}', re.S)
NAMESPACE = re.compile(r'\bnamespace\s+([\w.]+)\s*;')
INCLUDE = re.compile(r'\binclude\s+"([^"]+)"\s*;')


def strip_comments(text):
    text = re.sub(r'/\*.*?\*/', ' ', text, flags=re.S)
    return re.sub(r'//[^\n]*', '', text)


def norm(s):
    return ' '.join(s.split())


class Schema:
    def __init__(self, path, include_dirs):
        self.decls = {}  # qualified name -> (kind, attrs, body)
        self.file_identifier = None
        self.root_type = None
        self._seen = set()
        self._load(path, include_dirs, top=True)

    def _load(self, path, include_dirs, top):
        path = os.path.realpath(path)
        if path in self._seen:
            return
        self._seen.add(path)
        with open(path, encoding='utf-8') as f:
            text = strip_comments(f.read())
        for inc in INCLUDE.findall(text):
            for d in [os.path.dirname(path)] + include_dirs:
                if os.path.exists(os.path.join(d, inc)):
                    self._load(os.path.join(d, inc), include_dirs, top=False)
                    break
            else:
                raise SystemExit(f'{path}: include "{inc}" not found')
        namespaces = [(m.start(), m.group(1)) for m in NAMESPACE.finditer(text)]
        for m in DECL.finditer(text):
            ns = ''
            for pos, name in namespaces:
                if pos < m.start():
                    ns = name
            qname = f'{ns}.{m.group(2)}' if ns else m.group(2)
            self.decls[qname] = (m.group(1), norm(m.group(3)), m.group(4))
        if top:
            fid = re.search(r'\bfile_identifier\s+"([^"]*)"', text)
            root = re.search(r'\broot_type\s+([\w.]+)\s*;', text)
            self.file_identifier = fid.group(1) if fid else None
            self.root_type = root.group(1) if root else None


def fields(body):
    """Table fields as (name, rest-of-declaration) in declaration order."""
    out = []
    for part in body.split(';'):
        part = norm(part)
        if ':' in part:
            name, rest = part.split(':', 1)
            out.append((name.strip(), rest.strip()))
    return out


def members(body):
    """Enum values / union members as names in declaration order."""
    out = []
    for part in body.split(','):
        part = norm(part)
        if part:
            out.append(part.split('=')[0].split(':')[0].strip())
    return out


def required(decl):
    m = re.search(r'\(([^)]*)\)\s*$', decl)
    return bool(m) and 'required' in [a.strip().split(':')[0] for a in m.group(1).split(',')]


def extra_checks(old, new):
    problems = []
    if old.file_identifier != new.file_identifier:
        problems.append(f'file_identifier changed: {old.file_identifier!r} -> {new.file_identifier!r}')
    if old.root_type != new.root_type:
        problems.append(f'root_type changed: {old.root_type} -> {new.root_type}')
    for qname, (kind, attrs, body) in old.decls.items():
        if qname not in new.decls:
            problems.append(f'{kind} {qname} removed or renamed')
            continue
        nkind, nattrs, nbody = new.decls[qname]
        if nkind != kind:
            problems.append(f'{qname} changed from {kind} to {nkind}')
        elif kind == 'struct':
            if norm(body) != norm(nbody) or attrs != nattrs:
                problems.append(f'struct {qname} changed (structs never change)')
        elif kind == 'table':
            of, nf = fields(body), fields(nbody)
            if [n for n, _ in nf[:len(of)]] != [n for n, _ in of]:
                problems.append(f'table {qname}: fields {[n for n, _ in of]} are not a prefix of '
                                f'{[n for n, _ in nf]} (removed, reordered or renamed field)')
            for (name, odecl), (_, ndecl) in zip(of, nf):
                if required(ndecl) and not required(odecl):
                    problems.append(f'table {qname}: field {name} became (required)')
            for name, ndecl in nf[len(of):]:
                if required(ndecl):
                    problems.append(f'table {qname}: appended field {name} is (required)')
        else:  # enum, union
            om, nm = members(body), members(nbody)
            if nm[:len(om)] != om:
                problems.append(f'{kind} {qname}: {om} is not a prefix of {nm}')
            if attrs != nattrs:
                problems.append(f'{kind} {qname}: type or attributes changed: {attrs!r} -> {nattrs!r}')
    return problems


def check(flatc, frozen, current, quiet=False, includes=()):
    """Returns a list of problems (empty: compatible)."""
    cmd = [flatc, '--conform', frozen, '--conform-includes', os.path.dirname(frozen) or '.',
           '-I', os.path.dirname(current) or '.']
    for d in includes:
        cmd += ['-I', d]
    cmd.append(current)
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    out = (r.stdout + r.stderr).strip()
    problems = []
    if r.returncode != 0 or 'error' in out:
        problems.append(f'flatc --conform (exit {r.returncode}): ' + ' '.join(out.split()))
    problems += extra_checks(Schema(frozen, [os.path.dirname(frozen)]),
                             Schema(current, [os.path.dirname(current)] + list(includes)))
    if not quiet:
        print(' '.join(cmd))
        print(f'flatc exit status {r.returncode}' + (f', output: {out}' if out else ''))
    return problems


# --self-test: a small schema and edits that must be refused (True) or accepted (False).
BASE_INC = 'namespace t;\nenum Code : ushort { Ok = 0, Bad, Worse }\n'
BASE = '''include "inc.fbs";
namespace t;
enum Kind : ubyte { A = 0, B, C }
struct S { a: ulong; b: uint; c: Code; pad: [ubyte:2]; }
table T { s: S (required); name: string (required); x: uint; y: [ubyte]; }
table U { v: uint; }
union Body { T, U }
table Root { t: T; body: Body; }
root_type Root;
file_identifier "TEST";
'''
EDITS = [
    ('unchanged', None, False),
    ('table field appended', ('y: [ubyte];', 'y: [ubyte]; z: ulong;'), False),
    ('enum value appended', ('A = 0, B, C', 'A = 0, B, C, D'), False),
    ('union member appended', ('{ T, U }', '{ T, U, Root }'), False),
    ('field deprecated', ('x: uint;', 'x: uint (deprecated);'), False),
    ('table field inserted in the middle', ('x: uint;', 'w: ulong; x: uint;'), True),
    ('table field retyped', ('x: uint;', 'x: ulong;'), True),
    ('table field removed (middle)', ('x: uint;', ''), True),
    ('table field removed (last)', ('y: [ubyte];', ''), True),
    ('default changed', ('x: uint;', 'x: uint = 5;'), True),
    ('struct field retyped', ('b: uint;', 'b: int;'), True),
    ('struct array length changed', ('[ubyte:2]', '[ubyte:1]'), True),
    ('struct field appended', ('pad: [ubyte:2]; }', 'pad: [ubyte:2]; more: ulong; }'), True),
    ('enum value inserted', ('A = 0, B, C', 'A = 0, Z, B, C'), True),
    ('enum value removed (last)', ('A = 0, B, C', 'A = 0, B'), True),
    ('included enum value inserted', ('Ok = 0, Bad', 'Ok = 0, Meh, Bad'), True),
    ('union reordered', ('{ T, U }', '{ U, T }'), True),
    ('file_identifier changed', ('"TEST"', '"TES2"'), True),
    ('root_type changed', ('root_type Root;', 'root_type T;'), True),
    ('field became required', ('y: [ubyte];', 'y: [ubyte] (required);'), True),
    ('appended field required', ('y: [ubyte];', 'y: [ubyte]; z: string (required);'), True),
]


def self_test(flatc):
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for d in ('frozen', 'current'):
            os.mkdir(os.path.join(tmp, d))
            with open(os.path.join(tmp, d, 'inc.fbs'), 'w', encoding='utf-8') as f:
                f.write(BASE_INC)
        with open(os.path.join(tmp, 'frozen', 'base.fbs'), 'w', encoding='utf-8') as f:
            f.write(BASE)
        for what, edit, must_fail in EDITS:
            text, inc = BASE, BASE_INC
            if edit is not None:
                target = 'inc' if edit[0] in BASE_INC else 'base'
                if target == 'inc':
                    inc = inc.replace(edit[0], edit[1])
                else:
                    assert edit[0] in text, what
                    text = text.replace(edit[0], edit[1])
            with open(os.path.join(tmp, 'current', 'base.fbs'), 'w', encoding='utf-8') as f:
                f.write(text)
            with open(os.path.join(tmp, 'current', 'inc.fbs'), 'w', encoding='utf-8') as f:
                f.write(inc)
            problems = check(flatc, os.path.join(tmp, 'frozen', 'base.fbs'),
                             os.path.join(tmp, 'current', 'base.fbs'), quiet=True)
            ok = bool(problems) == must_fail
            failures += not ok
            print(f'{"ok  " if ok else "FAIL"} {what}: '
                  f'{"refused" if problems else "accepted"} {problems[:1]}')
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--flatc', default='flatc')
    ap.add_argument('--self-test', action='store_true')
    ap.add_argument('-I', dest='includes', action='append', default=[])
    ap.add_argument('--map-namespace', metavar='FROM=TO')
    ap.add_argument('frozen', nargs='?')
    ap.add_argument('current', nargs='?')
    a = ap.parse_args()
    if a.self_test:
        return self_test(a.flatc)
    if not a.frozen or not a.current:
        ap.error('FROZEN and CURRENT are required')
    if a.map_namespace:
        src, dst = a.map_namespace.split('=')
        with open(a.current, encoding='utf-8') as f:
            text = f.read()
        if f'namespace {src};' not in text:
            ap.error(f'{a.current} has no "namespace {src};"')
        with tempfile.TemporaryDirectory() as tmp:
            mapped = os.path.join(tmp, os.path.basename(a.current))
            with open(mapped, 'w', encoding='utf-8') as f:
                f.write(text.replace(f'namespace {src};', f'namespace {dst};'))
            problems = check(a.flatc, a.frozen, mapped,
                             includes=[os.path.dirname(a.current)] + a.includes)
    else:
        problems = check(a.flatc, a.frozen, a.current, includes=a.includes)
    for p in problems:
        print('NOT CONFORMING:', p)
    if not problems:
        print(f'{a.current} is a compatible evolution of {a.frozen}')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
