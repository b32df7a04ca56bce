# shellcheck shell=bash
# Progress for the long steps of scripts/lab and scripts/test (sourced by both): `step N M WHAT`
# numbers the steps, and `pip_install PYTHON ARGS...` runs pip showing each package it collects and
# how many it installs, where `pip -q` was silent for minutes. pip's whole output goes to a log,
# shown only when pip fails.

step() {
    printf '[%s/%s] %s\n' "$1" "$2" "$3"
}

# Reads pip's output on stdin and prints a short line per package and per stage (its errors are in
# the log pip_install shows). On a terminal the "collecting" line is rewritten in place; elsewhere
# (CI logs) each package gets its own line.
pip_progress() {
    local line name names collected=0 present=0 installing=0 tty=0
    [ -t 1 ] && tty=1
    while IFS= read -r line; do
        case "$line" in
            "Collecting "*)
                name=${line#Collecting }
                name=${name%% *}
                name=${name%%[<>=!~;[]*}
                collected=$((collected + 1))
                if [ "$tty" = 1 ]; then
                    printf '\r\033[K      collecting %s (%d)' "$name" "$collected"
                else
                    printf '      collecting %s (%d)\n' "$name" "$collected"
                fi
                ;;
            "Requirement already satisfied: "*)
                present=$((present + 1))
                ;;
            "Installing collected packages: "*)
                [ "$tty" = 1 ] && [ "$collected" -gt 0 ] && printf '\r\033[K'
                installing=1
                names=${line#Installing collected packages: }
                # the names are comma-separated: one more name than commas
                printf '      installing %d package(s), %d already there ...\n' \
                    "$(($(tr -cd , <<<"$names" | wc -c) + 1))" "$present"
                ;;
            "Successfully installed "*)
                printf '      installed\n'
                ;;
        esac
    done
    if [ "$installing" = 0 ] && [ "$present" -gt 0 ]; then
        printf '      nothing new: %d requirement(s) already there\n' "$present"
    fi
}

# pip_install PYTHON ARGS...: `PYTHON -m pip install ARGS...` with progress; pip's exit status.
pip_install() {
    local - python=$1 log status
    shift
    set +e  # (local -: only inside this function) keep going to report pip's failure ourselves
    log=$(mktemp "${TMPDIR:-/tmp}/pip-install.XXXXXX") || return 1
    "$python" -m pip install --disable-pip-version-check --progress-bar off "$@" 2>&1 | tee "$log" | pip_progress
    status=${PIPESTATUS[0]}
    if [ "$status" -ne 0 ]; then
        printf 'pip install failed (exit status %s); the end of its output:\n' "$status" >&2
        tail -n 40 "$log" >&2
    fi
    rm -f "$log"
    return "$status"
}
