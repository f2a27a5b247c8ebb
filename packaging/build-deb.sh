#!/usr/bin/env bash
# Build exactmaild_<version>-<rev>_<arch>.deb from this checkout.
#
#   packaging/build-deb.sh [OUTDIR]        (default: packaging/out/)
#
# The package carries its own virtualenv in /opt/exactmaild (see
# packaging/README.md for why), built with the system python3 it will run
# on, plus the systemd units, sysusers/tmpfiles snippets, the example
# configuration (a conffile) and the monitoring files. Needs: python3 with
# venv, pip (any python's, >= 22.3 for --python), dpkg-deb, and the package
# index pip is configured for. Environment: PYTHON (interpreter for the
# venv), DEB_REVISION (default 1).
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
outdir=${1:-$repo/packaging/out}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

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

read -r version pyver < <("$py" - "$repo/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f)["project"]["version"], "%d.%d" % sys.version_info[:2])
PY
)
revision=${DEB_REVISION:-1}
arch=$(dpkg --print-architecture)
deb="$outdir/exactmaild_${version}-${revision}_${arch}.deb"

stage=$(mktemp -d "${TMPDIR:-/tmp}/exactmaild-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
venv=$root/opt/exactmaild
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
# Installed by name from the wheel directory, not by path, so pip records
# no direct_url.json pointing into the staging tree. --no-compile: the
# bytecode is compiled below with the final paths in it.
"${pip[@]}" --python "$venv/bin/python" install --quiet --no-compile \
    --no-warn-script-location --find-links "$stage/wheels" "exactmaild==$version"

# 3. Relocate: the scripts' shebangs, activate* and pyvenv.cfg name the
#    staging path; the installed venv lives at /opt/exactmaild.
grep -rlI --null -F "$venv" "$venv/bin" "$venv/pyvenv.cfg" \
    | xargs -0 -r sed -i "s|$venv|/opt/exactmaild|g"
"$venv/bin/python" -m compileall -q -j 0 -s "$root" -p / "$venv/lib" >/dev/null
if grep -rlI -F "$stage" "$venv"; then
    echo "build-deb: staging path left in the files above" >&2
    exit 70
fi

# 4. Everything around the venv.
install -d "$root/usr/bin"
ln -s /opt/exactmaild/bin/exactmaild "$root/usr/bin/exactmaild"
ln -s /opt/exactmaild/bin/exactmaild-sendmail "$root/usr/bin/exactmaild-sendmail"
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
if [[ -f $repo/etc/exactmaild/exactmaild.yaml ]]; then
    install -m 0644 "$repo/etc/exactmaild/exactmaild.yaml" "$root/etc/exactmaild/"
else
    echo "build-deb: WARNING: etc/exactmaild/exactmaild.yaml missing, shipping a placeholder" >&2
    printf '%s\n' "# Placeholder: the example configuration was missing at build time." \
        "# See /usr/share/doc/exactmaild/ and \`exactmaild check-config\`." \
        >"$root/etc/exactmaild/exactmaild.yaml"
fi
install -D -m 0644 "$here/debian/copyright" "$root/usr/share/doc/exactmaild/copyright"
install -m 0644 "$here/README.md" "$root/usr/share/doc/exactmaild/README.Debian.md"
[[ -f $repo/README.md ]] && install -m 0644 "$repo/README.md" "$root/usr/share/doc/exactmaild/"

# 5. Control files.
install -d "$root/DEBIAN"
install -m 0755 -t "$root/DEBIAN" "$here/debian/postinst" "$here/debian/prerm" "$here/debian/postrm"
echo /etc/exactmaild/exactmaild.yaml >"$root/DEBIAN/conffiles"
next_minor=$("$py" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version-$revision/" -e "s/@ARCH@/$arch/" \
    -e "s/@PYVER@/$pyver/" -e "s/@PYNEXT@/$next_minor/" \
    -e "s/@SIZE@/$installed_size/" "$here/debian/control.in" >"$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' \
    | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"

dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "$deb"
echo "build-deb: built in $((SECONDS - start)) s" >&2
