using System.CommandLine;
using ModelCompression.Diagnostics;
using ModelCompression.Policy;

namespace ModelCompression.Cli.Commands;

/// <summary>
/// <c>compress-model batch --request request.json</c>: what the MSBuild task runs, once per project. Every item is
/// compressed (one failing item does not stop the others); diagnostics name the item's model file.
/// </summary>
public static class BatchCommand
{
    public static Command Create(TextWriter output, TextWriter error, CancellationToken cancellation)
    {
        var requestOption = new Option<string>("--request") { Description = "The request file the MSBuild task wrote (items, outputs, settings).", Required = true };
        var command = new Command("batch", "Compress every item of a request file (used by the ModelCompression.MSBuild task).") { requestOption };
        command.SetAction(parse => CompressModelApp.Guard(error, () => Run(ReadRequest(parse.GetValue(requestOption)!), output, error, cancellation)));
        return command;
    }

    public static EngineRequest ReadRequest(string path)
    {
        try
        {
            return EngineRequest.Read(path);
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or IOException or UnauthorizedAccessException or NotSupportedException)
        {
            throw new CompressionException(DiagnosticCodes.BadUsage, $"cannot read the request: {e.Message}", path);
        }
    }

    public static ReturnCode Run(EngineRequest request, TextWriter output, TextWriter error, CancellationToken cancellation)
    {
        var worst = ReturnCode.Success;
        CompressionPolicy[] policies;
        // Validate every item first, so a build reports all metadata mistakes at once.
        var errors = new List<Diagnostic>();
        policies = request.Items.Select(item =>
        {
            // Setting mistakes are in the project file that defines the item, not in the model.
            try { return PolicySettings.Parse(item.Settings ?? new Dictionary<string, string>(), item.BaseDirectory, item.ProjectFile ?? item.Model); }
            catch (CompressionException e) { errors.AddRange(e.Diagnostics); return null!; }
        }).ToArray();
        // One process loads one native runtime: items that name different ones cannot share a batch.
        var libraries = errors.Count > 0 ? [] : request.Items.Zip(policies, (item, policy) => (item.Model, Library: Runtime.OnnxRuntimeLoader.LibraryFor(policy)))
            .Where(x => x.Library is not null).Select(x => (x.Model, Library: Path.GetFullPath(x.Library!))).ToList();
        if (libraries.Select(x => x.Library).Distinct(StringComparer.Ordinal).Count() > 1)
            errors.Add(new Diagnostic(DiagnosticCodes.ConflictingSettings, Severity.Error,
                "items use different ONNX Runtime libraries and one process can load only one: " +
                string.Join("; ", libraries.Select(x => $"{x.Model} uses {x.Library}")) + ". Give them the same OnnxRuntimeLibrary or run them in separate batches."));
        errors.AddRange(Collisions(request.Items));
        if (errors.Count > 0)
        {
            ConsoleOutput.WriteDiagnostics(error, errors);
            return ReturnCode.BadInput;
        }
        // An item that names no library runs on the one another item needs (every build has the CPU provider).
        Runtime.OnnxRuntimeLoader.UseLibrary(libraries.Select(x => x.Library).FirstOrDefault());

        for (var i = 0; i < request.Items.Count; i++)
        {
            cancellation.ThrowIfCancellationRequested();
            var item = request.Items[i];
            var compress = new CompressionRequest(item.Model, item.Output, item.ReportDirectory, policies[i])
            {
                GateFailureAsWarning = request.GateFailureAsWarning,
                CacheDirectory = item.CacheDirectory,
            };
            var code = (ReturnCode)CompressModelApp.Guard(error, () => CompressCommand.Run(compress, benchmark: false, output, error, cancellation, EngineOutput.SummaryPrefix));
            if (code == ReturnCode.Cancelled) return code;
            if (Rank(code) > Rank(worst)) worst = code;
        }
        return worst;
    }

    /// <summary>
    /// Items that would write the same output, or the same reports and kept candidate (named after the output file in
    /// the report folder): one would silently replace the other's, so neither runs.
    /// </summary>
    private static IEnumerable<Diagnostic> Collisions(IReadOnlyList<EngineRequestItem> items)
    {
        var comparer = OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparer.OrdinalIgnoreCase : StringComparer.Ordinal;
        foreach (var group in items.GroupBy(i => Path.GetFullPath(i.Output), comparer).Where(g => g.Count() > 1))
            yield return new Diagnostic(DiagnosticCodes.ConflictingSettings, Severity.Error,
                $"{string.Join(" and ", group.Select(i => $"'{i.Model}'"))} write the same output '{group.Key}': give each item its own output path", group.First().Model);
        var reports = items.GroupBy(i => Path.Combine(Path.GetFullPath(i.ReportDirectory), Path.GetFileNameWithoutExtension(i.Output)), comparer)
            .Where(g => g.Select(i => Path.GetFullPath(i.Output)).Distinct(comparer).Count() > 1);
        foreach (var group in reports)
            yield return new Diagnostic(DiagnosticCodes.ConflictingSettings, Severity.Error,
                $"outputs {string.Join(" and ", group.Select(i => $"'{i.Output}'").Distinct(comparer))} would write the same reports '{group.Key}.report.*' (reports are named after the output file): give them different file names or report folders", group.First().Model);
    }

    private static int Rank(ReturnCode code) => code switch { ReturnCode.Success => 0, ReturnCode.GateFailed => 1, ReturnCode.BadInput => 2, _ => 3 };
}
