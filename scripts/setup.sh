#!/usr/bin/env bash
# Installs what Vmi needs on a fresh Debian 12 machine, builds the solution and the lab guest.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
mapfile -t packages < scripts/debian-packages.txt
export DEBIAN_FRONTEND=noninteractive
echo "setup: apt-get update"
$SUDO apt-get update -qq
echo "setup: apt-get install ${packages[*]}"
$SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
command -v dotnet >/dev/null || { echo "setup: the .NET 10 SDK is required (dotnet not on PATH)" >&2; exit 1; }
echo "setup: dotnet restore + build"
dotnet restore Vmi.sln --verbosity quiet
dotnet build Vmi.sln -c Release --no-restore --verbosity quiet -nologo
echo "setup: lab guest"
./vmi lab build
./vmi lab build --flavour cloud-amd64
