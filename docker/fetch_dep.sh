#!/usr/bin/env bash
# fetch_dep.sh: put one of FINN's external dependencies where finn-plus looks for it (below
# FINN_DEPS, laid out as `finn deps update` would), at the version finn-plus pins in
# finn/interface/external_dependencies.yaml. Used by the Dockerfile at image build time.
#   fetch_dep.sh git URL COMMIT DEST [SUBDIR]   the repository at COMMIT (only SUBDIR of it, if
#                                               given) copied into DEST, without .git
#   fetch_dep.sh archive URL DEST [SHA256]      a .zip / .tar.* downloaded and unpacked into DEST
#                                               (checked against SHA256 when given)
set -euo pipefail

usage() { sed -n '2,9p' "$0" >&2; exit 2; }
[ "$#" -ge 3 ] || usage
kind="$1"
shift
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

case "$kind" in
git)
    [ "$#" -ge 3 ] || usage
    url="$1" commit="$2" dest="$3" subdir="${4:-.}"
    git -C "$work" init --quiet
    git -C "$work" remote add origin "$url"
    if [ "$subdir" != "." ]; then
        git -C "$work" sparse-checkout set --no-cone "/$subdir/"
    fi
    # One commit, fetched by its hash; blobs only for the files checked out.
    git -C "$work" fetch --quiet --depth 1 --filter=blob:none origin "$commit"
    git -C "$work" -c advice.detachedHead=false checkout --quiet FETCH_HEAD
    got="$(git -C "$work" rev-parse HEAD)"
    if [ "$got" != "$commit" ]; then
        echo "error: $url: fetched $got, expected $commit" >&2
        exit 1
    fi
    if [ ! -d "$work/$subdir" ]; then
        echo "error: $url at $commit has no directory $subdir" >&2
        exit 1
    fi
    rm -rf "$work/.git"
    mkdir -p "$dest"
    cp -r "$work/$subdir/." "$dest/"
    ;;
archive)
    url="$1" dest="$2" sha256="${3:-}"
    file="$work/${url##*/}"
    curl --fail --silent --show-error --location --retry 3 --output "$file" "$url"
    if [ -n "$sha256" ]; then
        echo "$sha256  $file" | sha256sum --check --quiet -
    fi
    mkdir -p "$dest"
    case "$file" in
    *.zip) unzip -q -o "$file" -d "$dest" ;;
    *.tar.* | *.tgz) tar -xf "$file" -C "$dest" ;;
    *)
        echo "error: $url: not a .zip or .tar.* archive" >&2
        exit 1
        ;;
    esac
    ;;
*) usage ;;
esac
