#!/usr/bin/env python3
"""Extract character vectors from an R lazy-load database (.rdx/.rdb) as plain text.

Pure standard library; no R needed. Supports the subset of R's XDR
serialization format (versions 2 and 3) needed for data objects:
vectors, strings, lists, pairlists, symbols, attributes, and the common
ALTREP classes (compact sequences, wrappers, deferred strings).

Usage: rdb_to_text.py DATA_DIR/Rdata [--list] [--names a,b,c] > out.txt
  (the argument is the path without the .rdx/.rdb suffix)
Each selected object must be a character vector; its elements are written
one per line, in the order given by --names (default: index order), with two
blank lines between objects.
"""
import gzip
import struct
import sys
import zlib

NILVALUE, GLOBALENV, UNBOUND, MISSINGARG, BASENAMESPACE = 254, 253, 252, 251, 247
NAMESPACE, PACKAGE, PERSIST, EMPTYENV, BASEENV = 249, 250, 248, 242, 241
REFSXP, ALTREP, ATTRLIST, ATTRLANG = 255, 238, 239, 240


class RObj:
    def __init__(self, kind, value=None, attrs=None):
        self.kind, self.value, self.attrs = kind, value, attrs or {}

    def __repr__(self):
        return "RObj(%r, %r)" % (self.kind, self.value if not isinstance(self.value, list) else "len=%d" % len(self.value))


class Reader:
    def __init__(self, data):
        if data[:2] != b"X\n":
            raise ValueError("only XDR ('X\\n') serialization is supported, got %r" % data[:2])
        self.d, self.p, self.refs = data, 2, []
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader version
        if version == 3:
            n = self.int()
            self.p += n  # native encoding name
        elif version != 2:
            raise ValueError("unsupported serialization version %d" % version)

    def int(self):
        v = struct.unpack_from(">i", self.d, self.p)[0]
        self.p += 4
        return v

    def length(self):
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def item(self):
        flags = self.int()
        t = flags & 0xFF
        levels = flags >> 12
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))

        if t == NILVALUE:
            return None
        if t in (GLOBALENV, UNBOUND, MISSINGARG, BASENAMESPACE, EMPTYENV, BASEENV):
            return RObj("special", t)
        if t == REFSXP:
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            return self.refs[idx - 1]
        if t in (PERSIST, NAMESPACE, PACKAGE):
            self.int()  # 0
            n = self.int()
            strs = [self.item() for _ in range(n)]
            obj = RObj("namespace", strs)
            self.refs.append(obj)
            return obj
        if t == 1:  # SYMSXP
            obj = RObj("symbol", self.item())
            self.refs.append(obj)
            return obj
        if t == 4:  # ENVSXP
            obj = RObj("env")
            self.refs.append(obj)
            self.int()  # locked
            enclos, frame, hashtab, attr = self.item(), self.item(), self.item(), self.item()
            obj.value = {"frame": frame, "hashtab": hashtab}
            return obj
        if t in (2, 3, 5, 6, 17, ATTRLIST, ATTRLANG):  # pairlist-like
            items = []
            attr = None
            while True:
                if has_attr:
                    attr = self.item()
                tag = self.item() if has_tag else None
                car = self.item()
                items.append((tag.value if isinstance(tag, RObj) and tag.kind == "symbol" else tag, car))
                # cdr: peek flags to continue iteratively for pairlists
                nflags = struct.unpack_from(">i", self.d, self.p)[0]
                nt = nflags & 0xFF
                if nt in (2, ATTRLIST) and t in (2, ATTRLIST):
                    self.p += 4
                    has_attr = bool(nflags & (1 << 9))
                    has_tag = bool(nflags & (1 << 10))
                    continue
                cdr = self.item()
                if cdr is not None:
                    items.append((None, cdr))
                break
            return RObj("pairlist", items)
        if t == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None  # NA_character_
            raw = self.d[self.p:self.p + n]
            self.p += n
            enc = "latin-1" if levels & (1 << 2) else "utf-8"
            return raw.decode(enc, errors="replace")
        if t in (10, 13):  # LGLSXP, INTSXP
            n = self.length()
            vals = list(struct.unpack_from(">%di" % n, self.d, self.p))
            self.p += 4 * n
            return self._attrs(RObj("int", vals), has_attr)
        if t == 14:  # REALSXP
            n = self.length()
            vals = list(struct.unpack_from(">%dd" % n, self.d, self.p))
            self.p += 8 * n
            return self._attrs(RObj("real", vals), has_attr)
        if t == 15:  # CPLXSXP
            n = self.length()
            self.p += 16 * n
            return self._attrs(RObj("complex", None), has_attr)
        if t == 24:  # RAWSXP
            n = self.length()
            vals = self.d[self.p:self.p + n]
            self.p += n
            return self._attrs(RObj("raw", vals), has_attr)
        if t == 16:  # STRSXP
            n = self.length()
            vals = [self.item() for _ in range(n)]
            return self._attrs(RObj("str", vals), has_attr)
        if t in (19, 20):  # VECSXP, EXPRSXP
            n = self.length()
            vals = [self.item() for _ in range(n)]
            return self._attrs(RObj("list", vals), has_attr)
        if t == 25:  # S4SXP
            return self._attrs(RObj("s4"), has_attr)
        if t == ALTREP:
            info, state, attr = self.item(), self.item(), self.item()
            cls = info.value[0][1].value if info and info.kind == "pairlist" else None
            obj = self._altrep(cls, state)
            if isinstance(attr, RObj) and attr.kind == "pairlist":
                obj.attrs = {k: v for k, v in attr.value}
            return obj
        raise ValueError("unsupported SEXP type %d at offset %d" % (t, self.p - 4))

    def _attrs(self, obj, has_attr):
        if has_attr:
            pl = self.item()
            if isinstance(pl, RObj) and pl.kind == "pairlist":
                obj.attrs = {k: v for k, v in pl.value}
        return obj

    @staticmethod
    def _altrep(cls, state):
        if cls in ("compact_intseq", "compact_realseq"):
            n, start, inc = state.value[:3]
            vals = [start + i * inc for i in range(int(n))]
            return RObj("int" if cls == "compact_intseq" else "real", vals)
        if cls and cls.startswith("wrap_"):
            x = state.value[0][1] if state.kind == "pairlist" else state.value[0]
            return RObj(x.kind, x.value)
        if cls == "deferred_string":
            x = state.value[0][1] if state.kind == "pairlist" else state
            return RObj("str", [str(int(v)) if float(v).is_integer() else repr(v) for v in x.value])
        raise ValueError("unsupported ALTREP class %r" % cls)


def load_index(base):
    idx = Reader(gzip.decompress(open(base + ".rdx", "rb").read())).item()
    parts = dict(zip(idx.attrs["names"].value, idx.value))
    var = parts["variables"]
    compressed = parts.get("compressed")
    ctype = compressed.value[0] if compressed is not None else 1
    return dict(zip(var.attrs["names"].value, (v.value for v in var.value))), ctype


def load_object(base, offlen, ctype):
    off, n = offlen
    with open(base + ".rdb", "rb") as f:
        f.seek(int(off))
        chunk = f.read(int(n))
    if ctype in (1, True):
        data = zlib.decompress(chunk[4:])
    elif ctype == 2:
        import bz2
        data = bz2.decompress(chunk[5:])
    elif ctype == 3:
        import lzma
        data = lzma.decompress(chunk[5:]) if chunk[4:5] == b"Z" else chunk[5:]
    else:
        data = chunk
    return Reader(data).item()


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    base = argv[0]
    variables, ctype = load_index(base)
    if "--list" in argv:
        for k, v in variables.items():
            print(k, v)
        return 0
    names = list(variables)
    if "--names" in argv:
        names = argv[argv.index("--names") + 1].split(",")
    unknown = [n for n in names if n not in variables]
    if unknown:
        raise SystemExit("unknown object(s) %s; available: %s" % (unknown, ", ".join(variables)))
    out = sys.stdout
    for i, name in enumerate(names):
        obj = load_object(base, variables[name], ctype)
        if not isinstance(obj, RObj) or obj.kind != "str":
            raise SystemExit("object %r is not a character vector (%r)" % (name, obj))
        if i:
            out.write("\n\n")  # two blank lines between objects (books)
        for line in obj.value:
            out.write(("" if line is None else line) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(encoding="utf-8", newline="\n")
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)
