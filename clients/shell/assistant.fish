# assistant.fish: assistantd hotkeys for fish 3.1+.
#
#   source /path/to/clients/shell/assistant.fish      # in ~/.config/fish/config.fish
#
# Alt-a  turn the description on the line into a command (the line is replaced)
# Alt-e  explain the command on the line (printed below the prompt; the line stays)
# Ctrl-C while "⏳ asking…" shows cancels the request and gives the line back.
#
# Settings (set them before sourcing; an empty key binds nothing):
#   ASSISTANT_KEY_COMMAND='\ea'  ASSISTANT_KEY_EXPLAIN='\ee'   (escapes as in `bind`)
#   ASSISTANT_PYTHON   the python3 that runs the stdlib-only client
#   ASSISTANT_MODEL    a model name; the daemon's default_model otherwise
#   ASSISTANTD_SOCKET  the socket, if not the contract's default
# Alt-e replaces fish's default "edit the line in $EDITOR"; pick another key if you use it.

if status is-interactive
    if set -q ASSISTANT_ASK
        set -g __assistant_helper $ASSISTANT_ASK
    else
        set -g __assistant_helper (string replace -r '/[^/]*$' '' -- (builtin realpath (status filename)))/assistant-ask
    end

    # A real interpreter, not a version manager's shim (pyenv's costs ~50 ms a keypress).
    if not set -q ASSISTANT_PYTHON; or test -z "$ASSISTANT_PYTHON"
        set -g ASSISTANT_PYTHON python3
        for p in /usr/bin/python3 /opt/homebrew/bin/python3 /usr/local/bin/python3
            if test -x $p
                set -g ASSISTANT_PYTHON $p
                break
            end
        end
    end

    # The line goes on stdin, never on a command line: `ps` shows those to every user.
    # Replace the line with the command the daemon proposes; keep it on error or Ctrl-C.
    function __assistant_command
        set -l line (commandline | string collect)
        string match -qr '\S' -- "$line"; or return
        set -l out (printf '%s' "$line" | $ASSISTANT_PYTHON -I -S $__assistant_helper --tty --thinking --shell fish command - 2>&1 | string collect)
        set -l rc $pipestatus[2]
        # The command is one line; a note or an error (stderr) comes before it: print that
        # above the prompt, which the repaint draws again below it. The repaint starts as
        # many rows up as the old line had below its first: leave that many blank rows.
        set -l lines (string split \n -- $out)
        set -l message
        if test $rc -eq 0; and test -n "$lines[-1]"
            set message $lines[1..-2]
            commandline -r -- $lines[-1]
        else
            test $rc -eq 130; or set message $lines
            commandline -r -- $line
        end
        if test -n "$message"
            echo
            printf '%s\n' $message
            set -l rows (count (string split \n -- $line))
            test $rows -gt 1; and for row in (seq 2 $rows)
                echo
            end
        end
        commandline -f end-of-line repaint
    end

    # Print an explanation below the line; the prompt and the line are drawn again after it.
    function __assistant_explain
        set -l line (commandline | string collect)
        string match -qr '\S' -- "$line"; or return
        echo
        printf '%s' "$line" | $ASSISTANT_PYTHON -I -S $__assistant_helper --tty --thinking --shell fish explain -
        commandline -f repaint
    end

    set -q ASSISTANT_KEY_COMMAND; or set -l ASSISTANT_KEY_COMMAND '\ea'
    set -q ASSISTANT_KEY_EXPLAIN; or set -l ASSISTANT_KEY_EXPLAIN '\ee'
    for mode in default insert
        if test -n "$ASSISTANT_KEY_COMMAND"
            bind -M $mode (string unescape -- $ASSISTANT_KEY_COMMAND) __assistant_command
        end
        if test -n "$ASSISTANT_KEY_EXPLAIN"
            bind -M $mode (string unescape -- $ASSISTANT_KEY_EXPLAIN) __assistant_explain
        end
    end
end
