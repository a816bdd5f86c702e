# Sourced by _venv.sh and lock.sh. gpubench_python VERSION-OR-COMMAND prints an interpreter to run: a command as
# given (python3, /usr/bin/python3.12), or for a version such as 3.10, python3.10 from PATH or else pyenv's
# newest 3.10.x (pyenv's shims answer for the selected versions only).
gpubench_python() {
  local want="$1" found
  case "$want" in
    [0-9]*)
      if "python$want" -c '' >/dev/null 2>&1; then
        echo "python$want"
        return 0
      fi
      found="$( (ls -d "$(pyenv root 2>/dev/null || echo /nonexistent)/versions/$want".*/bin/"python$want" 2>/dev/null \
        || true) | sort -V | tail -n 1)"
      if [ -z "$found" ]; then
        echo "no Python $want: neither python$want on PATH nor a pyenv version $want.x" >&2
        return 1
      fi
      echo "$found" ;;
    *) echo "$want" ;;
  esac
}
