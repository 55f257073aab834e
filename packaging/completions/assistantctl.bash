# bash completion for assistantctl.
#
# Install: copy to ~/.local/share/bash-completion/completions/assistantctl (with the
# bash-completion package), or `source` it from ~/.bashrc.
#
# Subcommands, options and their choices are read from `assistantctl ... --help`
# (argparse), once per shell and subcommand, so they always match the installed
# version. Provider, model and conversation names come from a daemon that is already
# running (`--no-autostart`: completing never starts one).

_assistantctl_help() {  # REPLY = `assistantctl [SUB] --help`, cached in a variable
    local var=_assistantctl_help_${2:-main}
    var=${var//[^A-Za-z0-9_]/_}
    if [[ -z ${!var+set} ]]; then
        printf -v "$var" '%s' "$("$1" ${2:+"$2"} --help 2>/dev/null)"
    fi
    REPLY=${!var}
}

# From help text in REPLY: _ac_choices (the first positional's choices), _ac_options
# (every option), _ac_valued (options that take a value) and _ac_optchoices[opt].
_assistantctl_parse() {
    local line words=() w i in_pos=0
    _ac_choices= _ac_options=() _ac_valued=" "
    declare -gA _ac_optchoices=()
    while IFS= read -r line; do
        if [[ $line == 'positional arguments:' ]]; then
            in_pos=1
        elif (( in_pos )) && [[ -z $_ac_choices && $line =~ ^\ \ \{([^}]*)\} ]]; then
            _ac_choices=${BASH_REMATCH[1]//,/ }
        fi
    done <<<"$REPLY"
    read -d '' -ra words <<<"$REPLY"
    for ((i = 0; i < ${#words[@]}; i++)); do
        w=${words[i]#[}
        w=${w%]}
        w=${w%,}
        [[ $w == -[A-Za-z-]* && $w != *[!A-Za-z0-9-]* ]] || continue
        [[ " ${_ac_options[*]} " == *" $w "* ]] || _ac_options+=("$w")
        local next=${words[i + 1]-}
        if [[ ${words[i]} == \[* && $next =~ ^[A-Z{] ]]; then
            _ac_valued+="$w "
            [[ $next =~ ^\{([^}]*)\} ]] && _ac_optchoices[$w]=${BASH_REMATCH[1]//,/ }
        fi
    done
}

_assistantctl_names() {  # a column of a listing from a running daemon
    "$1" --no-autostart "${@:3}" 2>/dev/null | awk -v c="$2" 'NR > 1 && $c != "" { print $c }'
}

_assistantctl() {
    local cmd=$1 cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    local sub= action= i w REPLY
    _assistantctl_help "$cmd"
    _assistantctl_parse
    local main_valued=$_ac_valued
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if [[ -z $sub ]]; then
            if [[ $main_valued == *" $w "* ]]; then
                ((i += 1))
            elif [[ $w != -* ]]; then
                sub=$w
                _assistantctl_help "$cmd" "$sub"
                _assistantctl_parse
            fi
        elif [[ $w == -* ]]; then
            [[ $_ac_valued == *" $w "* ]] && ((i += 1))
        elif [[ -z $action ]]; then
            action=$w
        fi
    done

    case $prev in
        --socket | --config) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        -m | --model) COMPREPLY=($(compgen -W "$(_assistantctl_names "$cmd" 2 models)" -- "$cur")); return ;;
        -p | --provider) COMPREPLY=($(compgen -W "$(_assistantctl_names "$cmd" 1 providers)" -- "$cur")); return ;;
        -r | --role) COMPREPLY=($(compgen -W "$(_assistantctl_names "$cmd" 1 roles)" -- "$cur")); return ;;
        -c | --conversation)
            COMPREPLY=($(compgen -W "$(_assistantctl_names "$cmd" 1 conversations list --limit 50)" -- "$cur"))
            return ;;
    esac
    if [[ $_ac_valued == *" $prev "* ]]; then
        COMPREPLY=($(compgen -W "${_ac_optchoices[$prev]-}" -- "$cur"))
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "${_ac_options[*]}" -- "$cur"))
    elif [[ -z $sub || ( -n $_ac_choices && -z $action ) ]]; then
        COMPREPLY=($(compgen -W "$_ac_choices" -- "$cur"))
    elif [[ $sub == keys && $action == @(set|delete) ]]; then
        COMPREPLY=($(compgen -W "$(_assistantctl_names "$cmd" 1 providers)" -- "$cur"))
    elif [[ $sub == conv* && $action == @(show|rm|rename|fork|export) ]]; then
        COMPREPLY=($(compgen -W "$(_assistantctl_names "$cmd" 1 conversations list --limit 50)" -- "$cur"))
    elif [[ $sub == summarize ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}

complete -F _assistantctl assistantctl
