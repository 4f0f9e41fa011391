using System.Diagnostics;
using System.Globalization;
using ModelCompression.Reliability;

// Reliability campaign: seeded mutations of the sample MLP, its settings and its data, each run through the CLI's
// entry point in this process and judged (exit code, coded errors, stack traces, hangs, leftovers, source intact).
//   dotnet run --project bench/Reliability -c Release -- --count 10000 --seed 1 [--timeout 60] [--only category/kind] [--show 20] [--small]
var count = 1000;
var seed = 1;
var timeout = 60.0;
var show = 20;
string? only = null;
int? shrink = null;
for (var i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--count": count = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--seed": seed = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--timeout": timeout = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--show": show = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--only": only = args[++i]; break;
        case "--small": shrink = 16; break;
        default: Console.Error.WriteLine($"unknown argument '{args[i]}'"); return 2;
    }
}

var fixture = Path.Combine(AppContext.BaseDirectory, "data", "fmnist_mlp.onnx");
var fixtureHash = Files.Hashes(Path.GetDirectoryName(fixture)!);
var mutator = new Mutator(fixture, shrink);
var root = Path.Combine(Path.GetTempPath(), "mc-reliability", Guid.NewGuid().ToString("N"));
var tally = new Tally();
var clock = Stopwatch.StartNew();
Func<string, string, bool>? include = only is null ? null : (category, kind) => $"{category}/{kind}".StartsWith(only, StringComparison.Ordinal);
for (var index = 0; index < count; index++)
{
    var work = Path.Combine(root, index.ToString(CultureInfo.InvariantCulture));
    var c = mutator.Create(seed, index, work, include);
    var outcome = Campaign.Run(c, TimeSpan.FromSeconds(timeout));
    tally.Add(outcome);
    if (!outcome.Hang) Directory.Delete(work, recursive: true);
    if ((index + 1) % 500 == 0) Console.Error.WriteLine($"{index + 1}/{count} cases, {clock.Elapsed.TotalSeconds:0} s, {tally.Failures.Count} failures");
}
try { Directory.Delete(root, recursive: true); } catch (IOException) { } // a hung case's folder may still be in use

Console.WriteLine($"seed {seed}, {count} cases{(shrink is null ? "" : " (MLP cut to 16 hidden neurons)")} in {clock.Elapsed.TotalSeconds:0.0} s; peak RSS {Process.GetCurrentProcess().PeakWorkingSet64 / (1024.0 * 1024):0} MiB");
Console.WriteLine(tally.Table());
var fixtureIntact = Files.Hashes(Path.GetDirectoryName(fixture)!).SequenceEqual(fixtureHash);
Console.WriteLine($"fixture model unmodified: {(fixtureIntact ? "yes" : "NO")}");
Console.WriteLine($"failures: {tally.Failures.Count} ({tally.NewFailures} not on record)");
foreach (var group in tally.Failures.GroupBy(f => f.KnownBug ?? "new").OrderBy(g => g.Key))
{
    Console.WriteLine($"-- {group.Key}: {group.Count()}");
    foreach (var f in group.Take(show)) Console.WriteLine(f.Describe());
}
return tally.NewFailures == 0 && fixtureIntact ? 0 : 1;
