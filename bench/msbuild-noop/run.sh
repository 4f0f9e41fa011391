#!/usr/bin/env bash
# Overhead of ModelCompression.MSBuild on a no-op incremental build.
#
# Packs the package from this checkout (a version unique to this run, so no cached copy stands in for it), then
# builds two copies of samples/FashionClassifier side by side: "with" as it is (one CompressModel item) and
# "without" the item (the model copied as plain content instead). After warm-up builds, it times
# `dotnet build --no-restore` of each, interleaved over several rounds (order alternating), and prints the medians
# and the median overhead. Target: <= 0.3 s.
#
#   bench/msbuild-noop/run.sh [rounds]        (default 9 rounds; KEEP=1 keeps the work folder; Linux, GNU sed)
set -euo pipefail

rounds="${1:-9}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="$(mktemp -d)"
version="0.1.0-bench.$(date +%Y%m%d%H%M%S)"
packages="${NUGET_PACKAGES:-$HOME/.nuget/packages}"
cleanup() {
  rm -rf "$packages/modelcompression.msbuild/$version"
  if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$work"; else echo "work folder: $work"; fi
}
trap cleanup EXIT
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

echo "packing ModelCompression.MSBuild $version ..."
dotnet pack "$repo/src/ModelCompression.MSBuild" -c Release -o "$work/feed" -p:PackageVersion="$version" -v:q -nologo >/dev/null

cat > "$work/NuGet.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
    <add key="bench" value="$work/feed" />
  </packageSources>
  <packageSourceMapping>
    <packageSource key="bench"><package pattern="ModelCompression.*" /></packageSource>
    <packageSource key="nuget.org"><package pattern="*" /></packageSource>
  </packageSourceMapping>
</configuration>
XML
cp "$repo/samples/Directory.Build.props" "$work/"
for variant in with without; do
  cp -r "$repo/samples/FashionClassifier" "$work/$variant"
  rm -rf "$work/$variant/bin" "$work/$variant/obj"
done
# "without": the same app, the original model copied to the output as content.
sed -i -e '/<CompressModel /,/\/>/c\    <None Include="models/fmnist_mlp.onnx" CopyToOutputDirectory="PreserveNewest" />' \
       -e '/ModelCompression.MSBuild/d' "$work/without/FashionClassifier.csproj"

# The gate's verdict does not matter for a no-op build; do not let a noisy latency ratio stop the benchmark.
props=(-p:ModelCompressionVersion="$version" -p:CompressModelGateFailureAsWarning=true)
for variant in with without; do
  echo "first build ($variant) ..."
  dotnet build "$work/$variant" "${props[@]}" -v:q -nologo >"$work/$variant-first.log" 2>&1 || { cat "$work/$variant-first.log"; exit 1; }
  for _ in 1 2 3; do dotnet build "$work/$variant" "${props[@]}" --no-restore -v:q -nologo >/dev/null; done   # warm-up
done

time_build() {  # prints seconds
  local start end
  start=$(date +%s%N)
  dotnet build "$work/$1" "${props[@]}" --no-restore -v:q -nologo >/dev/null
  end=$(date +%s%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f\n", (e - s) / 1e9 }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

: >"$work/with.times"; : >"$work/without.times"; : >"$work/diff.times"
for ((i = 1; i <= rounds; i++)); do
  if ((i % 2)); then w=$(time_build with); o=$(time_build without); else o=$(time_build without); w=$(time_build with); fi
  echo "$w" >>"$work/with.times"; echo "$o" >>"$work/without.times"; awk -v a="$w" -v b="$o" 'BEGIN { printf "%.3f\n", a - b }' >>"$work/diff.times"
  printf 'round %2d: with %6.3f s   without %6.3f s\n' "$i" "$w" "$o"
done

# The no-op build of "with" must not have run the engine.
dotnet build "$work/with" "${props[@]}" --no-restore -v:d -nologo >"$work/with-check.log" 2>&1
grep -q 'Skipping target "_CompressModel_GatherStale" because all output files are up-to-date' "$work/with-check.log" \
  || { echo "error: the no-op build did not skip the compression target"; exit 1; }
! grep -q 'Task "CompressModels"' "$work/with-check.log" || { echo "error: the no-op build ran the engine"; exit 1; }

with=$(median <"$work/with.times"); without=$(median <"$work/without.times"); paired=$(median <"$work/diff.times")
echo
echo "no-op dotnet build --no-restore, median of $rounds interleaved rounds:"
echo "  with CompressModel:    $with s"
echo "  without:               $without s"
echo "  overhead (paired):     $paired s   (target <= 0.3 s)"
