# Sourced by scripts/build_local_images.sh and scripts/trixie.sh: `debian_mirror SUITE` prints the
# Debian mirror apt uses here for SUITE (deb822 .sources files, URIs:/Suites:, or one-line .list
# files), or $MLMD_DEBIAN_MIRROR, else deb.debian.org: debootstrap fetches from where apt does.
debian_mirror() {
    if [ -n "${MLMD_DEBIAN_MIRROR:-}" ]; then echo "$MLMD_DEBIAN_MIRROR"; return; fi
    local suite=$1 file mirror=""
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] || continue
        mirror=$(awk -v suite="$suite" '
            function flush() { if (uri != "" && suites ~ "(^| )" suite "( |$)" && !found) { print uri; found = 1 } uri = ""; suites = "" }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { $1 = ""; suites = $0 " " }
            END { flush() }' "$file" | head -n 1)
        [ -n "$mirror" ] && { echo "$mirror"; return; }
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$file" ] || continue
        mirror=$(sed -E 's/\[[^]]*\]//' "$file" | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2; exit }')
        [ -n "$mirror" ] && { echo "$mirror"; return; }
    done
    echo "http://deb.debian.org/debian"
}
