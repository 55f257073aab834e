# assistant.zsh: assistantd hotkeys for zsh 5.1+ (ZLE widgets).
#
#   source /path/to/clients/shell/assistant.zsh       # in ~/.zshrc
#
# Alt-a  turn the description on the line into a command (the line is replaced;
#        `undo` brings the description back)
# Alt-e  explain the command on the line (printed below the prompt; the line stays)
# Ctrl-C while "⏳ asking…" shows cancels the request and gives the line back.
#
# Settings (set them before sourcing; an empty key binds nothing):
#   ASSISTANT_KEY_COMMAND='\ea'  ASSISTANT_KEY_EXPLAIN='\ee'   (bindkey notation)
#   ASSISTANT_PYTHON   the python3 that runs the stdlib-only client
#   ASSISTANT_MODEL    a model name; the daemon's default_model otherwise
#   ASSISTANTD_SOCKET  the socket, if not the contract's default
# Alt-a replaces zsh's default accept-and-hold binding; pick another key if you use it.
# The widgets are `assistant-command` and `assistant-explain` for your own bindkey lines.

[[ -o interactive ]] || return 0

typeset -g _assistant_helper=${ASSISTANT_ASK:-${${(%):-%x}:A:h}/assistant-ask}

# A real interpreter, not a version manager's shim (pyenv's costs ~50 ms a keypress).
if [[ -z ${ASSISTANT_PYTHON-} ]]; then
    typeset -g ASSISTANT_PYTHON=python3
    () {
        local p
        for p in /usr/bin/python3 /opt/homebrew/bin/python3 /usr/local/bin/python3; do
            [[ -x $p ]] && { ASSISTANT_PYTHON=$p; return }
        done
    }
fi

# Replace the line with the command the daemon proposes; keep it on error or Ctrl-C.
_assistant_command() {
    emulate -L zsh
    local line=$BUFFER out rc
    [[ -n ${line//[[:space:]]/} ]] || return 0
    BUFFER="⏳ asking… (Ctrl-C cancels)"
    CURSOR=$#BUFFER
    zle -R
    # The line goes on stdin, never on a command line: `ps` shows those to every user.
    out=$(print -rn -- "$line" | "$ASSISTANT_PYTHON" -I -S "$_assistant_helper" --tty --shell zsh command - 2>&1)
    rc=$?
    if (( rc == 0 )) && [[ -n $out ]]; then
        # The command is one line; a note about the answer's other lines comes before it.
        BUFFER=${out##*$'\n'}
        [[ $out == *$'\n'* ]] && zle -M "${out%$'\n'*}"
    else
        BUFFER=$line
        (( rc == 130 )) || zle -M "$out"
    fi
    CURSOR=$#BUFFER
}

# Print an explanation below the line; ZLE redraws the prompt and the line after it.
_assistant_explain() {
    emulate -L zsh
    local line=$BUFFER
    [[ -n ${line//[[:space:]]/} ]] || return 0
    zle -I
    print -rn -- "$line" | "$ASSISTANT_PYTHON" -I -S "$_assistant_helper" --tty --thinking --shell zsh explain -
}

zle -N assistant-command _assistant_command
zle -N assistant-explain _assistant_explain

() {
    local key_command=${ASSISTANT_KEY_COMMAND-'\ea'} key_explain=${ASSISTANT_KEY_EXPLAIN-'\ee'} map
    for map in emacs viins; do
        [[ -z $key_command ]] || bindkey -M $map "$key_command" assistant-command
        [[ -z $key_explain ]] || bindkey -M $map "$key_explain" assistant-explain
    done
}
