using System.Reflection;
using System.Text.RegularExpressions;
using ModelCompression.Cli;
using ModelCompression.Contracts;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;

namespace ModelCompression.Reliability;

/// <summary>What one case did, judged against the contract: a coded failure or a valid output, never anything else.</summary>
public sealed record Outcome(MutationCase Case, int? ExitCode, IReadOnlyList<string> Codes, string Output)
{
    public double Milliseconds { get; init; }
    public bool Hang { get; init; }
    /// <summary>An exception escaped the CLI's entry point (the process would have died).</summary>
    public string? Crash { get; init; }
    public bool StackTrace { get; init; }
    public bool InternalError => Codes.Contains(DiagnosticCodes.InternalError) || ExitCode == (int)ReturnCode.InternalError;
    public IReadOnlyList<string> Undocumented { get; init; } = [];
    /// <summary>A failure exit without any error code.</summary>
    public bool Uncoded { get; init; }
    /// <summary>Files a failed or finished run left that it must not: the output after a failure, temp files, files next to the source.</summary>
    public IReadOnlyList<string> LeftBehind { get; init; } = [];
    public bool SourceModified { get; init; }
    /// <summary>Exit 0 but the output is missing or does not load.</summary>
    public string? BadOutput { get; init; }
    /// <summary>The mutation has one right answer (an escaping external-data path is CM0111) and the run gave another.</summary>
    public string? WrongOutcome { get; init; }
    /// <summary>A bug already on record (being fixed elsewhere) that explains this case's failure.</summary>
    public string? KnownBug { get; init; }

    public bool Failed => Hang || Crash is not null || StackTrace || InternalError || Undocumented.Count > 0 || Uncoded
        || LeftBehind.Count > 0 || SourceModified || BadOutput is not null || WrongOutcome is not null;

    public string Describe()
    {
        var problems = new List<string>();
        if (Hang) problems.Add("hang");
        if (Crash is not null) problems.Add("crash: " + Crash);
        if (StackTrace) problems.Add("stack trace");
        if (InternalError) problems.Add("CM0001");
        if (Undocumented.Count > 0) problems.Add("undocumented " + string.Join(",", Undocumented));
        if (Uncoded) problems.Add("failure without a code");
        if (LeftBehind.Count > 0) problems.Add("left behind: " + string.Join(", ", LeftBehind));
        if (SourceModified) problems.Add("source modified");
        if (BadOutput is not null) problems.Add("bad output: " + BadOutput);
        if (WrongOutcome is not null) problems.Add(WrongOutcome);
        var text = Output.Length > 2000 ? Output[..2000] + "…" : Output;
        return $"{Case.Name} → exit {ExitCode?.ToString() ?? "-"} [{string.Join(", ", Codes)}] {string.Join("; ", problems)}{(KnownBug is null ? "" : $" (known: {KnownBug})")}\n    {string.Join(' ', Case.Args.Select(a => a.Contains(' ') ? $"'{a}'" : a))}\n    {text.Replace("\n", "\n    ")}";
    }
}

/// <summary>Runs mutation cases through the CLI's entry point in this process, each with a time limit, and judges them.</summary>
public static partial class Campaign
{
    private static readonly HashSet<string> Documented = typeof(DiagnosticCodes)
        .GetFields(BindingFlags.Public | BindingFlags.Static)
        .Where(f => f.IsLiteral && f.FieldType == typeof(string))
        .Select(f => (string)f.GetRawConstantValue()!)
        .ToHashSet(StringComparer.Ordinal);

    [GeneratedRegex(@"error (CM\d{4})")]
    private static partial Regex ErrorCode();

    [GeneratedRegex(@"^\s+at \S.*\)", RegexOptions.Multiline)]
    private static partial Regex StackFrame();

    /// <summary>
    /// Bugs on record whose fixes are in flight: a case that fails only through one of these is counted apart rather
    /// than as a new finding. None today (add an entry here when a finding is filed, remove it with its fix).
    /// </summary>
    public static string? KnownBug(MutationCase c) => c.Detail switch
    {
        _ => null,
    };

    public static Outcome Run(MutationCase c, TimeSpan timeout)
    {
        var before = Files.Hashes(c.InputDirectory);
        var output = new StringWriter();
        var error = new StringWriter();
        using var cancellation = new CancellationTokenSource();
        int? exit = null;
        Exception? escaped = null;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var thread = new Thread(() =>
        {
            try { exit = (int)CompressModelApp.Run(c.Args, output, error, cancellation.Token); }
            catch (Exception e) { escaped = e; }
        }, 64 * 1024 * 1024) { IsBackground = true, Name = $"case {c.Index}" };
        thread.Start();
        var hang = !thread.Join(timeout);
        if (hang)
        {
            // Cancel as Ctrl+C would; a run that ignores cancellation too is left behind on its (background) thread.
            cancellation.Cancel();
            thread.Join(TimeSpan.FromSeconds(10));
        }
        string text;
        lock (output) text = error.ToString() + output.ToString();
        var codes = ErrorCode().Matches(text).Select(m => m.Groups[1].Value).Distinct().ToList();
        var outcome = new Outcome(c, hang ? null : exit, codes, text)
        {
            Hang = hang,
            Milliseconds = clock.Elapsed.TotalMilliseconds,
            Crash = escaped is null ? null : $"{escaped.GetType().Name}: {escaped.Message}",
            StackTrace = StackFrame().IsMatch(text),
            Undocumented = codes.Where(code => !Documented.Contains(code)).ToList(),
            Uncoded = !hang && escaped is null && exit is not (null or 0) && codes.Count == 0,
            LeftBehind = hang ? [] : LeftBehind(c, exit),
            SourceModified = !SameHashes(before, Files.Hashes(c.InputDirectory)),
            BadOutput = exit == 0 ? CheckOutput(c.OutputPath) : null,
        };
        if (c.ExpectedCode is { } expected && !(exit == (int)ReturnCode.BadInput && codes.Contains(expected)))
            outcome = outcome with { WrongOutcome = $"expected {expected}" };
        return outcome.Failed ? outcome with { KnownBug = KnownBug(c) } : outcome;
    }

    private static bool SameHashes(Dictionary<string, string> a, Dictionary<string, string> b) =>
        a.Count == b.Count && a.All(kv => b.TryGetValue(kv.Key, out var v) && v == kv.Value);

    /// <summary>
    /// After a failure nothing may be at the output path; after any run no temp file may remain anywhere, and
    /// nothing new may appear next to the source model (the candidate of a failed gate lives in the report folder).
    /// </summary>
    private static List<string> LeftBehind(MutationCase c, int? exit)
    {
        var found = new List<string>();
        var work = Path.GetDirectoryName(c.InputDirectory)!;
        foreach (var file in Directory.EnumerateFiles(work, "*", SearchOption.AllDirectories))
        {
            var name = Path.GetFileName(file);
            if (name.EndsWith(".tmp", StringComparison.OrdinalIgnoreCase) || name.Contains(".tmp.", StringComparison.OrdinalIgnoreCase))
                found.Add(Path.GetRelativePath(work, file));
        }
        if (exit != 0 && File.Exists(c.OutputPath)) found.Add(Path.GetRelativePath(work, c.OutputPath));
        return found;
    }

    private static string? CheckOutput(string path)
    {
        if (!File.Exists(path)) return "exit 0 without an output";
        try
        {
            using var model = OnnxModel.Load(path);
            model.ValidateTensors();
            return null;
        }
        catch (Exception e) { return $"output does not load: {e.Message}"; }
    }
}
