#!/usr/bin/env bash
# Build exactmaild_<version>_<arch>.deb from this checkout.
#
#   packaging/build-deb.sh [OUTDIR]        (default: packaging/out/)
#
# The package carries its own virtualenv in /usr/lib/exactmaild (see
# packaging/README.md for why there), built with the system python3 it will
# run on from the hash-pinned requirements/runtime.lock, plus the systemd
# units, sysusers/tmpfiles snippets, the example configuration (a conffile),
# the monitoring files and the manual pages. The version is the top entry of
# packaging/debian/changelog, whose upstream part must be pyproject.toml's.
# Needs: python3 with venv, pip (any python's, >= 22.3 for --python),
# dpkg-deb, binutils (strip, only if a compiled extension is bundled), and a
# package index holding the locked files. Environment: PYTHON (interpreter
# for the venv).
#
# Reproducible: every mtime is clamped to the changelog's date
# (SOURCE_DATE_EPOCH), so two builds of one checkout are the same bytes.
set -euo pipefail
umask 022
export LC_ALL=C.UTF-8 TZ=UTC

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
outdir=${1:-$repo/packaging/out}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
prefix=/usr/lib/exactmaild

# The venv's bin/python is a symlink to this interpreter, so it must be the
# one the target system has: Debian's /usr/bin/python3.
if [[ -n ${PYTHON:-} ]]; then
    py=$PYTHON
elif [[ -x /usr/bin/python3 ]]; then
    py=/usr/bin/python3
else
    py=$(command -v python3 || command -v python)
    echo "build-deb: WARNING: no /usr/bin/python3; the venv points at $py," \
        "which the target host must have at the same path" >&2
fi

# Any pip can install into the venv with --python; prefer the target
# interpreter's own, else whichever python3 on PATH has one.
pip=()
for candidate in "$py" python3 python; do
    if "$candidate" -m pip --version >/dev/null 2>&1; then
        pip=("$candidate" -m pip)
        break
    fi
done
if [[ ${#pip[@]} -eq 0 ]]; then
    echo "build-deb: no pip found (apt-get install python3-pip)" >&2
    exit 69
fi

read -r upstream pyver < <("$py" - "$repo/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f)["project"]["version"], "%d.%d" % sys.version_info[:2])
PY
)
changelog=$here/debian/changelog
version=$(dpkg-parsechangelog -l "$changelog" -S Version)
maintainer=$(dpkg-parsechangelog -l "$changelog" -S Maintainer)
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l "$changelog" -S Timestamp)
export SOURCE_DATE_EPOCH
if [[ ${version%-*} != "$upstream" ]]; then
    echo "build-deb: debian/changelog is at $version but pyproject.toml at $upstream;" \
        "add a changelog entry (dch -v $upstream-1)" >&2
    exit 65
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/exactmaild-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
venv=$root$prefix
start=$SECONDS

# 1. The project as a wheel, built from a copy of the sources so the
#    checkout gets no build/ or *.egg-info litter.
src=$stage/src
mkdir -p "$src"
cp "$repo/pyproject.toml" "$src/"
for f in README.md LICENSE COPYING; do
    [[ -f $repo/$f ]] && cp "$repo/$f" "$src/"
done
if [[ ! -f $src/README.md ]]; then
    # pyproject.toml names README.md as the long description.
    echo "exactmaild" >"$src/README.md"
fi
cp -r "$repo/exactmaild" "$src/"
find "$src" -name __pycache__ -prune -exec rm -rf {} +
"${pip[@]}" wheel --quiet --no-deps --wheel-dir "$stage/wheels" "$src"

# 2. The venv, at its staging path; paths are rewritten below.
#    --without-pip: the service needs no pip at run time (and ensurepip is
#    in a separate Debian package).
"$py" -m venv --without-pip "$venv"
# The libraries: exactly the locked versions, each file checked against its
# sha256, wheels only (no build step whose tools are not pinned).
# --no-compile: no bytecode in the package; postinst compiles it.
"${pip[@]}" --python "$venv/bin/python" install --quiet --no-compile --no-deps \
    --require-hashes --only-binary :all: --no-warn-script-location \
    -r "$repo/requirements/runtime.lock"
# The project itself, by name from the wheel directory (not by path, so pip
# records no direct_url.json pointing into the staging tree).
"${pip[@]}" --python "$venv/bin/python" install --quiet --no-compile --no-deps \
    --no-warn-script-location --no-index --find-links "$stage/wheels" "exactmaild==$upstream"

# 3. Trim and relocate.
site=$(echo "$venv"/lib/python3*/site-packages)
# PyYAML's libyaml accelerator: exactmaild loads YAML only with its own
# subclass of the pure-Python SafeLoader (configyaml.py), so the extension is
# never used; it would be an unstripped ELF with a statically embedded
# libyaml. Without it `import yaml` sets __with_libyaml__ = False.
rm -f "$site"/yaml/_yaml.*.so
# The venv's activate scripts are for interactive shells; the service does
# not use them.
rm -f "$venv"/bin/activate "$venv"/bin/activate.* "$venv"/bin/Activate.ps1
rmdir "$venv"/include/python3* "$venv"/include 2>/dev/null || true
# bin/python3 points at the system interpreter: relative, as Debian wants a
# symlink within /usr (python and python3.X point at python3).
if [[ $(readlink "$venv/bin/python3") == /usr/bin/* ]]; then
    ln -sfn "../../../bin/$(basename "$(readlink "$venv/bin/python3")")" "$venv/bin/python3"
fi
find "$venv" -name __pycache__ -prune -exec rm -rf {} +
# Library modules that are not executable keep a `#!` line from upstream:
# blank it (keeping line numbers in tracebacks), as dh_python3 rewrites them.
find "$site" -name '*.py' ! -perm /111 -type f -print0 \
    | xargs -0 -r grep -lZ -m1 '^#!' \
    | xargs -0 -r sed -i '1s/^#!.*$//'
# The scripts' shebangs and pyvenv.cfg name the staging path.
grep -rlI --null -F "$venv" "$venv/bin" "$venv/pyvenv.cfg" \
    | xargs -0 -r sed -i "s|$venv|$prefix|g"
# The RECORD files must describe what ships: new hashes for the rewritten
# files (and none naming the random staging path), no rows for removed ones.
"$py" - "$site" <<'PY'
import base64, csv, hashlib, io, os, sys
site = sys.argv[1]
for entry in sorted(os.listdir(site)):
    record = os.path.join(site, entry, "RECORD")
    if not entry.endswith(".dist-info") or not os.path.isfile(record):
        continue
    rows = []
    with open(record, newline="") as f:
        for path, digest, size in csv.reader(f):
            full = os.path.normpath(os.path.join(site, path))
            if not os.path.isfile(full):
                continue
            if digest:
                data = open(full, "rb").read()
                sha = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
                digest, size = "sha256=" + sha.decode(), str(len(data))
            rows.append((path, digest, size))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    with open(record, "w", newline="") as f:
        f.write(out.getvalue())
PY
if grep -rlI -F "$stage" "$venv"; then
    echo "build-deb: staging path left in the files above" >&2
    exit 70
fi
# Any compiled extension a future lock brings: stripped, and its libraries
# become dependencies. Without one the package is architecture-independent.
shlibs=""
mapfile -d '' elves < <(find "$venv" -type f -name '*.so*' -print0)
if [[ ${#elves[@]} -gt 0 ]]; then
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "${elves[@]}"
    mkdir -p "$stage/debian"
    printf 'Source: exactmaild\n\nPackage: exactmaild\nArchitecture: any\n' >"$stage/debian/control"
    deps=$(cd "$stage" && dpkg-shlibdeps -O "${elves[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
    [[ -n $deps ]] && shlibs=", $deps"
    arch=$(dpkg --print-architecture)
else
    arch=all
fi

# 4. Everything around the venv.
install -d "$root/usr/bin"
ln -s ../lib/exactmaild/bin/exactmaild "$root/usr/bin/exactmaild"
ln -s ../lib/exactmaild/bin/exactmaild-sendmail "$root/usr/bin/exactmaild-sendmail"
install -D -m 0644 -t "$root/lib/systemd/system" \
    "$repo/systemd/exactmaild.service" "$repo/systemd/exactmaild@.service"
install -D -m 0644 "$repo/systemd/sysusers.d/exactmaild.conf" \
    "$root/usr/lib/sysusers.d/exactmaild.conf"
install -D -m 0644 "$repo/systemd/tmpfiles.d/exactmaild.conf" \
    "$root/usr/lib/tmpfiles.d/exactmaild.conf"
install -D -m 0644 -t "$root/usr/share/exactmaild" \
    "$repo/etc/prometheus/exactmaild-rules.yml" \
    "$repo/etc/prometheus/scrape-example.yml" \
    "$repo/etc/grafana/exactmaild-dashboard.json" \
    "$repo/systemd/notify-reload.conf"
install -d "$root/etc/exactmaild"
install -m 0644 "$repo/etc/exactmaild/exactmaild.yaml" "$root/etc/exactmaild/"
doc=$root/usr/share/doc/exactmaild
install -D -m 0644 "$here/debian/copyright" "$doc/copyright"
install -m 0644 "$here/README.md" "$doc/README.Debian"
install -m 0644 "$repo/README.md" "$doc/"
install -m 0644 "$repo/docs/operations.md" "$doc/"
gzip -9n <"$changelog" >"$doc/changelog.Debian.gz"
install -d "$root/usr/share/man/man1"
for page in "$here"/man/*.1; do
    gzip -9n <"$page" >"$root/usr/share/man/man1/$(basename "$page").gz"
done
install -D -m 0644 "$here/debian/lintian-overrides" \
    "$root/usr/share/lintian/overrides/exactmaild"
chmod -R u+w,go-w,a+rX "$root"

# 5. Control files.
install -d "$root/DEBIAN"
install -m 0755 -t "$root/DEBIAN" "$here/debian/postinst" "$here/debian/prerm" \
    "$here/debian/postrm" "$here/debian/config"
install -m 0644 "$here/debian/templates" "$root/DEBIAN/templates"
echo /etc/exactmaild/exactmaild.yaml >"$root/DEBIAN/conffiles"
next_minor=$("$py" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" \
    -e "s/@PYVER@/$pyver/" -e "s/@PYNEXT@/$next_minor/" \
    -e "s/@SIZE@/$installed_size/" -e "s|@MAINTAINER@|$maintainer|" \
    -e "s/@SHLIBS@/$shlibs/" "$here/debian/control.in" >"$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' \
    | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
find "$root" -print0 | xargs -0 touch --no-dereference --date="@$SOURCE_DATE_EPOCH"

deb="$outdir/exactmaild_${version}_${arch}.deb"
rm -f "$outdir"/exactmaild_*.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
echo "build-deb: built in $((SECONDS - start)) s" >&2
