# Sourced by the device scripts (device-check.sh, device-tp.sh, bench-tp.sh): finds a fixture where
# it can be on the device machine. Needs $B (the build) and $work (a scratch directory).
# locate NAME: sets src (checkpoint dir), ref (reference.safetensors), plan (may be empty); a
# NAME is a directory in $LG_FIXTURES, ../shared/fixtures or models/, or a package
# .device/fx-*/NAME.lgpkg (lg-pack) with NAME.reference.safetensors and NAME.longgen_plan.json beside
# it: what travels to the device machine, where ../shared does not.
locate() {
  local n=$1 d
  plan=""
  for d in "${LG_FIXTURES:-/nonexistent}" ../shared/fixtures models; do
    if [ -f "$d/$n/reference.safetensors" ]; then
      src=$d/$n ref=$d/$n/reference.safetensors
      [ -f "$d/$n/longgen_plan.json" ] && plan=$d/$n/longgen_plan.json
      return 0
    fi
  done
  for d in .device/fx-*; do
    if [ -f "$d/$n.lgpkg" ]; then
      "$B"/lg-unpack "$d/$n.lgpkg" -o "$work/$n.src" -q || return 1
      src=$work/$n.src ref=$d/$n.reference.safetensors
      [ -f "$d/$n.longgen_plan.json" ] && plan=$d/$n.longgen_plan.json
      return 0
    fi
  done
  return 1
}


# convert_fixture NAME OUT: converts as the test suite does (--rope keep; the LongGen fixtures with
# their plan, the others with every layer full); sets how (the plan arguments used)
convert_fixture() {
  if [ -n "$plan" ]; then how=(--plan "$plan"); else how=(--full-layers all); fi
  "$B"/lg-convert "$src" -o "$2" -q --rope keep "${how[@]}"
}
