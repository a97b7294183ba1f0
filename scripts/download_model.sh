#!/bin/sh
# Download BVLC CaffeNet, the ILSVRC12 image mean and the synset words for lrp-demo, and write
# configs/caffenet.txt for them.
#
# Usage: scripts/download_model.sh        (from any working directory)
#
# What it fetches (the sources the LRP Toolbox's demonstrator/download_model.sh and Caffe's
# data/ilsvrc12/get_ilsvrc_aux.sh use):
#   http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel
#       -> models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel (SHA1 checked, see below)
#   http://dl.caffe.berkeleyvision.org/caffe_ilsvrc12.tar.gz
#       -> models/bvlc_reference_caffenet/imagenet_mean.binaryproto and synset_words.txt (taken from the tarball)
#   https://raw.githubusercontent.com/BVLC/caffe/master/models/bvlc_reference_caffenet/deploy.prototxt
#       -> models/bvlc_reference_caffenet/deploy.prototxt
# and writes configs/caffenet.txt (formula 100, epsilon 1, beta 1, lastlayerindex -2, the binaryproto mean in
# mode 1, baseimgsize 256, outputs in ./lrp_output, rootpath someimages).
#
# Environment variables (all optional):
#   LRP_CLI_ROOT            where models/ and configs/ are (default: the repository holding this script)
#   LRP_CLI_DOWNLOAD_BASE   one base URL serving all three files under their names above
#                           (bvlc_reference_caffenet.caffemodel, caffe_ilsvrc12.tar.gz, deploy.prototxt)
#   LRP_CLI_MODEL_URL       full URL of the caffemodel        (overrides LRP_CLI_DOWNLOAD_BASE)
#   LRP_CLI_AUX_URL         full URL of caffe_ilsvrc12.tar.gz (overrides LRP_CLI_DOWNLOAD_BASE)
#   LRP_CLI_PROTOTXT_URL    full URL of deploy.prototxt       (overrides LRP_CLI_DOWNLOAD_BASE)
#   LRP_CLI_MODEL_SHA1      expected SHA1 of the caffemodel; default: the sha1 BVLC publishes in
#                           models/bvlc_reference_caffenet/readme.md, 4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46
#
# Every file is downloaded to a temporary name in its destination folder and renamed only once it is complete
# (and, for the caffemodel, its SHA1 matches), so an interrupted or failed run never leaves a partial file under
# a final name. A caffemodel already in place with the right SHA1 is not downloaded again. Exit status 0 on
# success; otherwise one "download_model.sh: error: ..." line on stderr and exit status 1.

set -eu

PROG=download_model.sh

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

say() {
    printf '%s: %s\n' "$PROG" "$*" >&2
}

SCRIPT_DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd -P) || die "cannot find the folder of $0"
ROOT=${LRP_CLI_ROOT:-$(dirname -- "$SCRIPT_DIR")}
[ -d "$ROOT" ] || die "LRP_CLI_ROOT $ROOT is not a folder"
ROOT=$(CDPATH= cd -- "$ROOT" && pwd -P)

BASE=${LRP_CLI_DOWNLOAD_BASE:-}
BASE=${BASE%/}
if [ -n "$BASE" ]; then
    MODEL_URL=${LRP_CLI_MODEL_URL:-$BASE/bvlc_reference_caffenet.caffemodel}
    AUX_URL=${LRP_CLI_AUX_URL:-$BASE/caffe_ilsvrc12.tar.gz}
    PROTOTXT_URL=${LRP_CLI_PROTOTXT_URL:-$BASE/deploy.prototxt}
else
    MODEL_URL=${LRP_CLI_MODEL_URL:-http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel}
    AUX_URL=${LRP_CLI_AUX_URL:-http://dl.caffe.berkeleyvision.org/caffe_ilsvrc12.tar.gz}
    PROTOTXT_URL=${LRP_CLI_PROTOTXT_URL:-https://raw.githubusercontent.com/BVLC/caffe/master/models/bvlc_reference_caffenet/deploy.prototxt}
fi
MODEL_SHA1=${LRP_CLI_MODEL_SHA1:-4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46}

DEST=$ROOT/models/bvlc_reference_caffenet
CONFIG_DIR=$ROOT/configs
mkdir -p "$DEST" "$CONFIG_DIR" || die "cannot create $DEST or $CONFIG_DIR"

# Temporary files and folders, removed on every exit (success, error or signal).
TEMPS=
cleanup() {
    for t in $TEMPS; do
        rm -rf -- "$t"
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

new_temp() {  # sets TMP to a new temporary file in folder $1 (dot-named, never mistaken for a real file)
    TMP=$(mktemp "$1/.download.XXXXXX") || die "cannot create a temporary file in $1"
    TEMPS="$TEMPS $TMP"
}

if command -v curl >/dev/null 2>&1; then
    fetch() { curl --fail --silent --show-error --location --retry 2 --output "$2" -- "$1" 2>&1; }
elif command -v wget >/dev/null 2>&1; then
    fetch() { wget --no-verbose --output-document="$2" -- "$1" 2>&1; }
else
    die "neither curl nor wget is installed; install one of them"
fi

sha1_of() {
    if command -v sha1sum >/dev/null 2>&1; then
        sha1sum -- "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 1 -- "$1" | cut -d' ' -f1
    elif command -v openssl >/dev/null 2>&1; then
        openssl dgst -sha1 "$1" | sed 's/.*= *//'
    else
        die "no sha1sum, shasum or openssl to check the caffemodel with"
    fi
}

download() {  # download URL to temporary file $2; one clear line and exit 1 on any failure
    say "downloading $1"
    if ! detail=$(fetch "$1" "$2"); then
        detail=$(printf '%s' "$detail" | tr '\n' ' ' | sed 's/ *$//')
        die "download of $1 failed${detail:+: $detail}"
    fi
    [ -s "$2" ] || die "download of $1 gave an empty file"
}

# -- the caffemodel ------------------------------------------------------------------------------------------------
MODEL=$DEST/bvlc_reference_caffenet.caffemodel
if [ -f "$MODEL" ] && [ "$(sha1_of "$MODEL")" = "$MODEL_SHA1" ]; then
    say "$MODEL is already there (SHA1 matches)"
else
    new_temp "$DEST"
    tmp=$TMP
    download "$MODEL_URL" "$tmp"
    got=$(sha1_of "$tmp")
    [ "$got" = "$MODEL_SHA1" ] || die "$MODEL_URL: SHA1 $got does not match the published $MODEL_SHA1 (file discarded)"
    chmod 644 "$tmp"
    mv -f -- "$tmp" "$MODEL" || die "cannot move the caffemodel to $MODEL"
fi

# -- the prototxt --------------------------------------------------------------------------------------------------
new_temp "$DEST"
tmp=$TMP
download "$PROTOTXT_URL" "$tmp"
grep -q 'layer' "$tmp" || die "$PROTOTXT_URL: not a Caffe prototxt (no layers in it)"
chmod 644 "$tmp"
mv -f -- "$tmp" "$DEST/deploy.prototxt" || die "cannot move the prototxt to $DEST/deploy.prototxt"

# -- the mean and the synset words, from Caffe's ilsvrc12 auxiliary tarball ----------------------------------------
new_temp "$DEST"
tarball=$TMP
download "$AUX_URL" "$tarball"
unpacked=$(mktemp -d "$DEST/.unpack.XXXXXX") || die "cannot create a temporary folder in $DEST"
TEMPS="$TEMPS $unpacked"
tar -xzf "$tarball" -C "$unpacked" 2>/dev/null || die "$AUX_URL: not a readable .tar.gz archive"
for name in imagenet_mean.binaryproto synset_words.txt; do  # both present before either is installed
    found=$(find "$unpacked" -type f -name "$name" | head -n 1)
    [ -n "$found" ] || die "$AUX_URL: the archive holds no $name"
    [ -s "$found" ] || die "$AUX_URL: $name in the archive is empty"
done
for name in imagenet_mean.binaryproto synset_words.txt; do
    found=$(find "$unpacked" -type f -name "$name" | head -n 1)
    new_temp "$DEST"
    tmp=$TMP
    cp -- "$found" "$tmp" && chmod 644 "$tmp" && mv -f -- "$tmp" "$DEST/$name" || die "cannot write $DEST/$name"
done

# -- configs/caffenet.txt (paths relative to configs/, where lrp-demo also looks for them) --------------------------
new_temp "$CONFIG_DIR"
tmp=$TMP
cat >"$tmp" <<'EOF' || die "cannot write $CONFIG_DIR/caffenet.txt"
param_file
../models/bvlc_reference_caffenet/deploy.prototxt

model_file
../models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel

mean_file
../models/bvlc_reference_caffenet/imagenet_mean.binaryproto

use_mean_file_asbinaryprotoblob
1

lastlayerindex
-2

firstlayerindex
0

numclasses
1000

baseimgsize
256

standalone_outpath
./lrp_output

standalone_rootpath
someimages

synsetfile
../models/bvlc_reference_caffenet/synset_words.txt

epsstab
1

alphabeta_beta
1

relpropformulatype
100

auxiliaryvariable_maxlayerindexforflatdistinconv
0

Written by scripts/download_model.sh: BVLC CaffeNet with the ILSVRC12 mean (binaryproto, mode 1).
-2 starts relevance at the last InnerProduct layer (fc8), below the Softmax.
EOF
chmod 644 "$tmp"
mv -f -- "$tmp" "$CONFIG_DIR/caffenet.txt" || die "cannot write $CONFIG_DIR/caffenet.txt"

say "done: $DEST and $CONFIG_DIR/caffenet.txt"
say "try: lrp-demo $CONFIG_DIR/caffenet.txt testfilelist.txt ./   (from the repository root)"
