#!/bin/sh
# Regenerates docs/cli.md from the binary's --help: run `sh docs/gen-cli.sh` from the project
# root after `cargo build -p flatfhir`. Every subcommand that `flatfhir --help` lists gets a
# section, in that order. Help is wrapped at 100 columns (COLUMNS=100), whatever the terminal.
#
#   FLATFHIR=PATH   the binary (default: target/debug/flatfhir)
#   $1              where to write (default: docs/cli.md)
#
# The test `cli it cli_docs::docs_cli_md_is_the_help_of_this_binary` runs this script into a
# temporary file and fails when docs/cli.md differs from it.
set -eu
bin=${FLATFHIR:-target/debug/flatfhir}
out=${1:-docs/cli.md}
version=$("$bin" --version)
subs=$(COLUMNS=100 "$bin" --help | awk '/^Commands:/ { on = 1; next } on && /^$/ { exit } on && /^  [a-z]/ && $1 != "help" { print $1 }')
{
  echo "# CLI reference"
  echo
  echo "Generated from \`flatfhir <command> --help\` ($version) by \`docs/gen-cli.sh\`; a test keeps it in sync. Exit codes are listed per command in [architecture.md](architecture.md), [fetch.md](fetch.md) and [search.md](search.md)."
  echo
  echo '```text'
  COLUMNS=100 "$bin" --help
  echo '```'
  for sub in $subs; do
    echo
    echo "## flatfhir $sub"
    echo
    echo '```text'
    COLUMNS=100 "$bin" "$sub" --help
    echo '```'
  done
} > "$out"
