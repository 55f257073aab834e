#compdef assistantctl
# zsh completion for assistantctl.
#
# Install: copy to a folder on $fpath as `_assistantctl` (before `compinit` runs), or
# `source` it after `compinit` in ~/.zshrc.
#
# Subcommands, options and their choices are read from `assistantctl ... --help`
# (argparse), once per shell and subcommand, so they always match the installed
# version. Provider, model and conversation names come from a daemon that is already
# running (`--no-autostart`: completing never starts one).

typeset -gA _assistantctl_help_cache

# Parse `assistantctl [SUB] --help` into: choices (the first positional's choices),
# options, valued (options taking a value) and optchoices[opt].
_assistantctl_parse() {
    local key=${2:-main} text line i w next in_pos=0
    if (( ! ${+_assistantctl_help_cache[$key]} )); then
        _assistantctl_help_cache[$key]="$($1 ${2:+$2} --help 2>/dev/null)"
    fi
    text=$_assistantctl_help_cache[$key]
    choices=() options=() valued=() optchoices=()
    for line in "${(@f)text}"; do
        if [[ $line == 'positional arguments:' ]]; then
            in_pos=1
        elif (( in_pos && ! $#choices )) && [[ $line =~ '^  \{([^}]*)\}' ]]; then
            choices=(${(s:,:)match[1]})
        fi
    done
    local -a words=(${=text})
    for (( i = 1; i <= $#words; i++ )); do
        w=${${${words[i]#\[}%\]}%,}
        [[ $w == -[A-Za-z-]## && $w != *[^A-Za-z0-9-]* ]] || continue
        (( ${options[(Ie)$w]} )) || options+=($w)
        next=${words[i+1]-}
        if [[ $words[i] == \[* && $next =~ '^[A-Z{]' ]]; then
            valued+=($w)
            [[ $next =~ '^\{([^}]*)\}' ]] && optchoices[$w]=${match[1]//,/ }
        fi
    done
}

_assistantctl_names() {  # a column of a listing from a running daemon
    local -a out=(${(f)"$($1 --no-autostart ${@:3} 2>/dev/null | awk -v c=$2 'NR > 1 && $c != "" { print $c }')"})
    compadd -a out
}

_assistantctl() {
    setopt localoptions extendedglob
    local cmd=$words[1] cur=$words[CURRENT] prev=$words[CURRENT-1] sub= action= i w
    local -a choices options valued main_valued
    local -A optchoices
    local -a match mbegin mend
    _assistantctl_parse $cmd
    main_valued=($valued)
    for (( i = 2; i < CURRENT; i++ )); do
        w=$words[i]
        if [[ -z $sub ]]; then
            if (( ${main_valued[(Ie)$w]} )); then
                (( i++ ))
            elif [[ $w != -* ]]; then
                sub=$w
                _assistantctl_parse $cmd $sub
            fi
        elif [[ $w == -* ]]; then
            (( ${valued[(Ie)$w]} )) && (( i++ ))
        elif [[ -z $action ]]; then
            action=$w
        fi
    done

    case $prev in
        --socket|--config) _files; return ;;
        -m|--model) _assistantctl_names $cmd 2 models; return ;;
        -p|--provider) _assistantctl_names $cmd 1 providers; return ;;
        -r|--role) _assistantctl_names $cmd 1 roles; return ;;
        -c|--conversation) _assistantctl_names $cmd 1 conversations list --limit 50; return ;;
    esac
    if (( ${valued[(Ie)$prev]} )); then
        local -a values=(${=optchoices[$prev]-})
        compadd -a values
        return
    fi
    if [[ $cur == -* ]]; then
        compadd -a options
    elif [[ -z $sub ]] || (( $#choices )) && [[ -z $action ]]; then
        compadd -a choices
    elif [[ $sub == keys && $action == (set|delete) ]]; then
        _assistantctl_names $cmd 1 providers
    elif [[ $sub == conv* && $action == (show|rm|rename|fork|export) ]]; then
        _assistantctl_names $cmd 1 conversations list --limit 50
    elif [[ $sub == summarize ]]; then
        _files
    fi
}

if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
    _assistantctl "$@"
else
    compdef _assistantctl assistantctl
fi
