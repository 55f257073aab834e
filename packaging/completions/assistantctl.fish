# fish completion for assistantctl.
#
# Install: copy to ~/.config/fish/completions/assistantctl.fish.
#
# Subcommands, options and their choices are read from `assistantctl ... --help`
# (argparse), once per shell and subcommand, so they always match the installed
# version. Provider, model and conversation names come from a daemon that is already
# running (`--no-autostart`: completing never starts one).

# Parse `assistantctl [SUB] --help` into __ac_choices (the first positional's
# choices), __ac_options, __ac_valued (options taking a value) and __ac_oc_<opt>.
function __assistantctl_parse
    set -l key __assistantctl_help_(string replace -ra '[^A-Za-z0-9]' _ -- main $argv[2..-1] | string join _)
    if not set -q $key
        set -g $key ($argv --help 2>/dev/null)
    end
    set -g __ac_choices
    set -g __ac_options
    set -g __ac_valued
    set -l in_pos 0
    for line in $$key
        if test "$line" = 'positional arguments:'
            set in_pos 1
        else if test $in_pos = 1; and test (count $__ac_choices) = 0
            set -l m (string match -r '^  \{([^}]*)\}' -- $line)
            and set -g __ac_choices (string split , -- $m[2])
        end
    end
    set -l words (string split -n ' ' -- $$key)
    for i in (seq (count $words))
        set -l w (string replace -r '^\[' '' -- $words[$i] | string replace -r '\]$' '' | string replace -r ',$' '')
        string match -qr '^-[A-Za-z][A-Za-z0-9-]*$|^--[A-Za-z0-9-]+$' -- $w; or continue
        contains -- $w $__ac_options; or set -ga __ac_options $w
        set -l next $words[(math $i + 1)]
        if string match -q '[*' -- $words[$i]; and string match -qr '^[A-Z{]' -- "$next"
            set -ga __ac_valued $w
            set -l m (string match -r '^\{([^}]*)\}' -- $next)
            and set -g __ac_oc_(string replace -ra '-' _ -- $w) (string split , -- $m[2])
        end
    end
end

function __assistantctl_names  # a column of a listing from a running daemon
    $argv[1] --no-autostart $argv[3..-1] 2>/dev/null | awk -v c=$argv[2] 'NR > 1 && $c != "" { print $c }'
end

function __assistantctl_complete
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    set -l cmd $tokens[1]
    __assistantctl_parse $cmd
    set -l main_valued $__ac_valued
    set -l sub
    set -l action
    set -l skip 0
    for w in $tokens[2..-1]
        if test $skip = 1
            set skip 0
        else if test -z "$sub"
            if contains -- $w $main_valued
                set skip 1
            else if not string match -q -- '-*' $w
                set sub $w
                __assistantctl_parse $cmd $sub
            end
        else if string match -q -- '-*' $w
            contains -- $w $__ac_valued; and set skip 1
        else if test -z "$action"
            set action $w
        end
    end

    set -l prev $tokens[-1]
    switch $prev
        case --socket --config
            __fish_complete_path $cur
            return
        case -m --model
            __assistantctl_names $cmd 2 models
            return
        case -p --provider
            __assistantctl_names $cmd 1 providers
            return
        case -r --role
            __assistantctl_names $cmd 1 roles
            return
        case -c --conversation
            __assistantctl_names $cmd 1 conversations list --limit 50
            return
    end
    if contains -- $prev $__ac_valued
        set -l var __ac_oc_(string replace -ra '-' _ -- $prev)
        set -q $var; and printf '%s\n' $$var
        return
    end
    if string match -q -- '-*' $cur
        printf '%s\n' $__ac_options
    else if test -z "$sub"; or begin; test (count $__ac_choices) -gt 0; and test -z "$action"; end
        printf '%s\n' $__ac_choices
    else if test "$sub" = keys; and contains -- "$action" set delete
        __assistantctl_names $cmd 1 providers
    else if string match -q 'conv*' -- $sub; and contains -- "$action" show rm rename fork export
        __assistantctl_names $cmd 1 conversations list --limit 50
    else if test "$sub" = summarize
        __fish_complete_path $cur
    end
end

complete -c assistantctl -f -a '(__assistantctl_complete)'
