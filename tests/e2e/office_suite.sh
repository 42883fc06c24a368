#!/usr/bin/env bash
# End-to-end check, run by hand (not in CI): documents made by LibreOffice and pandoc, not by the
# Python libraries the tests use, indexed and searched. Writer documents (.docx, .odt, .rtf,
# .epub, .pdf, .html), slides (.pptx, .odp) and workbooks (.xlsx, .ods), in English and Chinese,
# each holding a made-up word in a known place; each word is searched and the first hit must be
# its document, with the heading, page, chapter, slide or sheet rows of the word's place.
# See office_suite.py for what is built and checked; exits 1 if a document fails.
#   --work DIR      where the sources, the documents and the index go
#                   (default tests/e2e/output/office-suite)
#   --mode MODE     search mode: hybrid (default), keyword or vector
#   --no-build      check the documents the last run built
#
# Installs what is missing from Debian (root, or sudo): LibreOffice's Writer, Calc and Impress
# (without recommended packages), pandoc, and a Chinese font for the PDFs.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
command -v soffice >/dev/null || missing+=(libreoffice-writer libreoffice-calc libreoffice-impress)
command -v pandoc >/dev/null || missing+=(pandoc)
fc-list :lang=zh 2>/dev/null | grep -q . || missing+=(fonts-noto-cjk)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
for program in libreoffice-writer libreoffice-calc libreoffice-impress; do
  dpkg -s "$program" >/dev/null 2>&1 || { echo "$program is not installed" >&2; exit 2; }
done

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import proxy' 2>/dev/null \
  || .venv/bin/python -m pip install --quiet -e '.[test]'

exec nice .venv/bin/python tests/e2e/office_suite.py "$@"
