# assistant.bash: assistantd hotkeys for bash 4.0+ (readline `bind -x`).
#
#   source /path/to/clients/shell/assistant.bash      # in ~/.bashrc
#
# Alt-a  turn the description on the line into a command (the line is replaced)
# Alt-e  explain the command on the line (printed below the prompt; the line stays)
# Ctrl-C while "⏳ asking…" shows cancels the request and gives the line back.
#
# Settings (set them before sourcing; an empty key binds nothing):
#   ASSISTANT_KEY_COMMAND='\ea'  ASSISTANT_KEY_EXPLAIN='\ee'
#   ASSISTANT_PYTHON   the python3 that runs the stdlib-only client (see below)
#   ASSISTANT_MODEL    a model name; the daemon's default_model otherwise
#   ASSISTANTD_SOCKET  the socket, if not the contract's default

[[ $- == *i* ]] || return 0  # bindings only mean something in an interactive shell

# assistant-ask sits next to this file (followed through a symlink to it).
_assistant_src=${BASH_SOURCE[0]}
[[ -L $_assistant_src ]] && _assistant_src=$(readlink -f -- "$_assistant_src" 2>/dev/null || echo "$_assistant_src")
[[ $_assistant_src == */* ]] && _assistant_src=${_assistant_src%/*} || _assistant_src=.
[[ $_assistant_src == /* ]] || _assistant_src=$PWD/$_assistant_src
_assistant_helper=${ASSISTANT_ASK:-$_assistant_src/assistant-ask}
unset _assistant_src

# A real interpreter, not a version manager's shim (pyenv's costs ~50 ms a keypress).
if [[ -z ${ASSISTANT_PYTHON-} ]]; then
    for _assistant_p in /usr/bin/python3 /opt/homebrew/bin/python3 /usr/local/bin/python3 python3; do
        if [[ -x $_assistant_p ]] || [[ $_assistant_p == python3 ]]; then
            ASSISTANT_PYTHON=$_assistant_p
            break
        fi
    done
    unset _assistant_p
fi

__assistant_ask() {
    "$ASSISTANT_PYTHON" -I -S "$_assistant_helper" --tty --thinking --shell bash "$@"
}

# The line goes on stdin, never on a command line: `ps` shows those to every user.
# Replace the line with the command the daemon proposes; keep it on error or Ctrl-C.
__assistant_command() {
    local line=$READLINE_LINE out
    [[ -n ${line//[[:space:]]/} ]] || return 0
    if out=$(printf '%s' "$line" | __assistant_ask command -) && [[ -n $out ]]; then
        READLINE_LINE=$out
    else
        READLINE_LINE=$line
    fi
    READLINE_POINT=${#READLINE_LINE}
}

# Print an explanation of the line below it; readline redraws the prompt and the line.
__assistant_explain() {
    local line=$READLINE_LINE
    [[ -n ${line//[[:space:]]/} ]] || return 0
    # Readline 8.1+ (bash 5.1+) clears the visible line before a `bind -x` command:
    # print the prompt's last line and the command again, so the explanation has context.
    if (( BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] >= 501 )); then
        local prompt=${PS1@P}
        prompt=${prompt##*$'\n'}
        prompt=${prompt//[$'\001\002']/}
        # The line as text: a control character in it would act on the terminal.
        printf '%s%s\n' "$prompt" "${line//[![:print:]$'\t\n']/$'\uFFFD'}" >/dev/tty
    else
        printf '\n' >/dev/tty
    fi
    printf '%s' "$line" | __assistant_ask explain -
}

_assistant_keys=("${ASSISTANT_KEY_COMMAND-\\ea}" "${ASSISTANT_KEY_EXPLAIN-\\ee}")
for _assistant_map in emacs vi-insert; do
    [[ -z ${_assistant_keys[0]} ]] || bind -m "$_assistant_map" -x "\"${_assistant_keys[0]}\": __assistant_command"
    [[ -z ${_assistant_keys[1]} ]] || bind -m "$_assistant_map" -x "\"${_assistant_keys[1]}\": __assistant_explain"
done
unset _assistant_map _assistant_keys
