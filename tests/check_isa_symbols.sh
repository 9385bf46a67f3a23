#!/usr/bin/env bash
# ctest cpu_isa_symbols: the AVX-512 build of the CPU kernels (kernels/cpu/isa.h) may define no
# global or weak symbol that the baseline build could also define: every one must carry the
# build's own names (hr::cpu::avx512, Eigen_avx512), or the linker could keep an AVX-512 copy of
# a shared inline function and the baseline build would run it on a processor without AVX-512.
#   check_isa_symbols.sh NM OBJECT...
set -u
nm_tool="$1"
shift
IFS=';' read -r -a objects <<<"$*"  # ctest passes the generator expression's list as one argument
bad=0
for o in "${objects[@]}"; do
  [ -f "$o" ] || { echo "missing object $o"; exit 1; }
  while read -r sym; do
    case "$sym" in
      *avx512*) ;;                       # this build's namespaces
      DW.ref.__gxx_personality_v0) ;;    # the personality routine's reference: data, no code
      *) echo "shared symbol in $(basename "$o"): $sym ($(echo "$sym" | c++filt))"; bad=1 ;;
    esac
  done < <("$nm_tool" --defined-only "$o" | awk '$2 ~ /^[A-Zui]$/ {print $3}')
done
[ $bad -eq 0 ] && echo "the AVX-512 objects (${#objects[@]}) define only their own symbols"
exit $bad
