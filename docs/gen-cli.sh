#!/bin/sh
# Regenerates docs/cli.md from the binary's --help (run from the project root after
# `cargo build -p flatfhir`). Help is wrapped at 100 columns, as clap does without a terminal.
set -eu
bin=${FLATFHIR:-target/debug/flatfhir}
version=$("$bin" --version)
{
  echo "# CLI reference"
  echo
  echo "Generated from \`flatfhir <command> --help\` ($version) by \`docs/gen-cli.sh\`. Exit codes are listed per command in [architecture.md](architecture.md), [fetch.md](fetch.md) and [search.md](search.md)."
  echo
  echo '```text'
  COLUMNS=100 "$bin" --help
  echo '```'
  for sub in convert schema bench fetch search status cancel export; do
    echo
    echo "## flatfhir $sub"
    echo
    echo '```text'
    COLUMNS=100 "$bin" "$sub" --help
    echo '```'
  done
} > docs/cli.md
