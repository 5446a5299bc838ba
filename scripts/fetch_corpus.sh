#!/usr/bin/env bash
# Build a small public-domain English text corpus from Debian packages.
#
# Writes (relative to the repository root):
#   data/austen.txt      Jane Austen's six novels (Sense and Sensibility,
#                        Pride and Prejudice, Mansfield Park, Emma,
#                        Northanger Abbey, Persuasion), original line breaks,
#                        UTF-8, two blank lines between novels (~4.0 MB).
#   data/persuasion.txt  Persuasion alone: a smaller file (~0.47 MB).
#
# Source: Debian package r-cran-janeaustenr (Project Gutenberg texts, public
# domain), fetched with `apt-get download` and unpacked with `dpkg-deb -x`.
# The R lazy-load database inside it is decoded by scripts/rdb_to_text.py
# (Python 3 standard library only; R is not needed).
#
# Idempotent: existing, non-empty outputs are kept; set FORCE=1 to rebuild.
# Needs: apt-get, dpkg-deb, python3. Run as root, or with apt lists already
# present (it runs `apt-get update` only if the download fails).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="$ROOT/data"
AUSTEN="$OUT_DIR/austen.txt"
SMALL="$OUT_DIR/persuasion.txt"
HELPER="$ROOT/scripts/rdb_to_text.py"
PKG=r-cran-janeaustenr
BOOKS=sensesensibility,prideprejudice,mansfieldpark,emma,northangerabbey,persuasion

report() {
    for f in "$AUSTEN" "$SMALL"; do
        printf '%s\t%s bytes\t%s lines\n' "${f#"$ROOT"/}" "$(stat -c %s "$f")" "$(wc -l < "$f")"
    done
}

if [[ -z "${FORCE:-}" && -s "$AUSTEN" && -s "$SMALL" ]]; then
    echo "outputs already present (FORCE=1 to rebuild)"
    report
    exit 0
fi

for cmd in apt-get dpkg-deb python3; do
    command -v "$cmd" >/dev/null || { echo "error: $cmd not found" >&2; exit 1; }
done

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
chmod 755 "$TMP"   # lets apt's _apt sandbox user write the .deb

(
    cd "$TMP"
    if ! apt-get download "$PKG" >/dev/null 2>"$TMP/apt.err"; then
        echo "apt-get download failed; running apt-get update and retrying" >&2
        apt-get update -qq
        apt-get download "$PKG"
    fi
)
DEB="$(ls "$TMP"/"$PKG"_*.deb)"
echo "downloaded $(basename "$DEB")"
dpkg-deb -x "$DEB" "$TMP/ex"
DB="$(dirname "$(find "$TMP/ex" -path '*/janeaustenr/data/Rdata.rdx' | head -n1)")/Rdata"
[[ -f "$DB.rdb" ]] || { echo "error: Rdata.rdb not found in $PKG" >&2; exit 1; }

mkdir -p "$OUT_DIR"
python3 "$HELPER" "$DB" --names "$BOOKS" > "$TMP/austen.txt"
python3 "$HELPER" "$DB" --names persuasion > "$TMP/persuasion.txt"

# Sanity checks before replacing the outputs.
grep -q '^PRIDE AND PREJUDICE$' "$TMP/austen.txt"
grep -q 'It is a truth universally acknowledged' "$TMP/austen.txt"
python3 -c 'import sys; [open(f, encoding="utf-8").read() for f in sys.argv[1:]]' \
    "$TMP/austen.txt" "$TMP/persuasion.txt"
[[ $(stat -c %s "$TMP/austen.txt") -gt 3000000 ]]

mv "$TMP/austen.txt" "$AUSTEN"
mv "$TMP/persuasion.txt" "$SMALL"
report
