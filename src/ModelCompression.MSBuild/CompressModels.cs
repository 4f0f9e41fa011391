using ModelCompression.Contracts;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

namespace ModelCompression.MSBuild;

/// <summary>
/// Compresses the given models by running the engine out of process, once for all of them:
/// <c>dotnet exec compress-model.dll batch --request request.json</c>. Native ONNX Runtime never loads into the
/// (long-lived) MSBuild node. The engine prints canonical <c>file: error CMxxxx: text</c> lines, which become
/// MSBuild errors and warnings with their code and file; its other lines (one summary per model) are messages of
/// normal importance. Cancelling the build kills the engine; it writes each output atomically, so none is partial.
/// </summary>
public sealed class CompressModels : ToolTask
{
    /// <summary>The models, with <c>_OutputFile</c> and <c>_ReportDirectory</c>; other custom metadata are settings.</summary>
    [Required] public ITaskItem[] Models { get; set; } = [];

    /// <summary>The engine: compress-model.dll (a framework-dependent app run with <c>dotnet exec</c>).</summary>
    [Required] public string EnginePath { get; set; } = string.Empty;

    /// <summary>Where the request JSON is written.</summary>
    [Required] public string RequestFile { get; set; } = string.Empty;

    /// <summary>The engine resolves relative paths in settings against this folder (the project folder).</summary>
    [Required] public string BaseDirectory { get; set; } = string.Empty;

    /// <summary>A missed threshold is a warning (the output is still written) instead of an error.</summary>
    public bool GateFailureAsWarning { get; set; }

    /// <summary>Metadata names the targets interpret themselves (not settings).</summary>
    public string[]? OwnedMetadata { get; set; }

    /// <summary>The dotnet host; defaults to <c>DOTNET_HOST_PATH</c> (set by the SDK), then <c>dotnet</c> on PATH.</summary>
    public string? DotNetHostPath { get; set; }

    /// <summary>The compressed models the engine wrote (their <c>_OutputFile</c>s).</summary>
    [Output] public ITaskItem[] CompressedModels { get; private set; } = [];

    protected override string ToolName => OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet";

    protected override string GenerateFullPathToTool() => FindDotNetHost() ?? ToolName;

    protected override string GenerateCommandLineCommands()
    {
        var builder = new CommandLineBuilder();
        builder.AppendSwitch("exec");
        builder.AppendFileNameIfNotNull(Path.GetFullPath(EnginePath));
        builder.AppendSwitch("batch");
        builder.AppendSwitch("--request");
        builder.AppendFileNameIfNotNull(Path.GetFullPath(RequestFile));
        return builder.ToString();
    }

    protected override bool ValidateParameters()
    {
        // Report every problem, not only the first one.
        var ok = ModelItems.Validate(Models, Log, requireReportDirectory: true);
        if (!File.Exists(EnginePath))
        {
            Log.LogError(null, Diagnostics.EngineNotFound, null, null, 0, 0, 0, 0,
                $"the compression engine '{EnginePath}' does not exist: restore the ModelCompression.MSBuild package again, or point CompressModelEnginePath at compress-model.dll");
            ok = false;
        }
        if (string.IsNullOrEmpty(ToolPath) && FindDotNetHost() is null)
        {
            Log.LogError(null, Diagnostics.DotNetHostNotFound, null, null, 0, 0, 0, 0,
                "cannot find the dotnet host to run the compression engine: set DOTNET_HOST_PATH, put dotnet on PATH, or set CompressModelDotNetHostPath");
            ok = false;
        }
        return ok;
    }

    protected override int ExecuteTool(string pathToTool, string responseFileCommands, string commandLineCommands)
    {
        if (!WriteRequest()) return -1;
        var exitCode = base.ExecuteTool(pathToTool, responseFileCommands, commandLineCommands);
        if (exitCode != 0 || Log.HasLoggedErrors) return exitCode;

        var written = new List<ITaskItem>(Models.Length);
        foreach (var model in Models)
        {
            var output = Path.GetFullPath(model.GetMetadata(ModelItems.OutputFile));
            if (File.Exists(output))
            {
                // Newer than every input read before the run, whatever timestamp the engine's write left: the next
                // build's up-to-date check must not depend on how the engine wrote the file.
                File.SetLastWriteTimeUtc(output, DateTime.UtcNow);
                written.Add(new TaskItem(ModelItems.Escape(output)));
            }
            else Log.LogError(null, Diagnostics.OutputMissing, null, model.GetMetadata("FullPath"), 0, 0, 0, 0,
                $"the compression engine exited with success but did not write '{output}'");
        }
        CompressedModels = [.. written];
        return Log.HasLoggedErrors ? -1 : 0;
    }

    /// <summary>
    /// Engine lines: canonical error/warning lines keep their file and code; each model's summary line is shown at
    /// normal build verbosity (high importance), so a build says what compression did; the rest are low-key messages.
    /// </summary>
    protected override void LogEventsFromTextOutput(string singleLine, MessageImportance messageImportance) =>
        Log.LogMessageFromText(singleLine, singleLine.StartsWith(EngineOutput.SummaryPrefix, StringComparison.Ordinal) ? MessageImportance.High : MessageImportance.Normal);

    protected override bool HandleTaskExecutionErrors()
    {
        if (Log.HasLoggedErrors) return false;    // the engine (or this task) already said what went wrong
        var meaning = (ReturnCode)ExitCode switch
        {
            ReturnCode.GateFailed => "a quality gate failed",
            ReturnCode.BadInput => "bad usage or input",
            ReturnCode.InternalError => "internal error",
            ReturnCode.Cancelled => "cancelled",
            _ => "killed or crashed",
        };
        Log.LogError(null, Diagnostics.EngineFailed, null, null, 0, 0, 0, 0,
            $"the compression engine exited with code {ExitCode} ({meaning}) without reporting an error; build with -v:n to see its output");
        return false;
    }

    private bool WriteRequest()
    {
        var owned = ModelItems.OwnedSet(OwnedMetadata);
        var baseDirectory = Path.GetFullPath(BaseDirectory);
        var items = Models.Select(model => new EngineRequestItem(
            Model: model.GetMetadata("FullPath"),
            Output: Path.GetFullPath(model.GetMetadata(ModelItems.OutputFile)),
            ReportDirectory: Path.GetFullPath(model.GetMetadata(ModelItems.ReportDirectory)),
            BaseDirectory: baseDirectory,
            // Setting mistakes point at the project file that defines the item.
            ProjectFile: model.GetMetadata(ModelItems.DefiningProject) is { Length: > 0 } project ? project : null,
            CacheDirectory: model.GetMetadata(ModelItems.CacheDirectory) is { Length: > 0 } cache ? Path.GetFullPath(cache) : null,
            Settings: ModelItems.Settings(model, owned))).ToList();
        try
        {
            var path = Path.GetFullPath(RequestFile);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            new EngineRequest(EngineRequest.CurrentVersion, GateFailureAsWarning, items).Write(path);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.LogError(null, Diagnostics.CannotWriteFile, null, RequestFile, 0, 0, 0, 0, $"cannot write the compression request: {e.Message}");
            return false;
        }
    }

    private string? FindDotNetHost()
    {
        foreach (var candidate in new[] { DotNetHostPath, Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") })
            if (!string.IsNullOrEmpty(candidate) && File.Exists(candidate)) return candidate;
        foreach (var directory in (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(directory, ToolName);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }
}
