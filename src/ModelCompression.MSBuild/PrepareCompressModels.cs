using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;
using Task = Microsoft.Build.Utilities.Task;

namespace ModelCompression.MSBuild;

/// <summary>
/// Runs on every build, in process and cheaply, so that the targets can decide per model whether the engine must run:
/// checks the items, assigns each its report folder, writes its stamp file (only when the content changes: the
/// settings, the output path and the engine version, i.e. what file timestamps cannot show), and lists the files
/// its output depends on (every setting whose value names an existing file or folder, the engine, the stamp).
/// </summary>
public sealed class PrepareCompressModels : Task
{
    private static readonly ConcurrentDictionary<(string Path, DateTime Written), string> EngineVersions = new();

    /// <summary>The <c>CompressModel</c> items, with <c>TargetPath</c> and <c>_OutputFile</c> set by the targets.</summary>
    [Required] public ITaskItem[] Models { get; set; } = [];

    /// <summary>The project folder: relative setting values (data files, policy file) resolve against it.</summary>
    [Required] public string ProjectDirectory { get; set; } = string.Empty;

    /// <summary>Folder for the stamp files.</summary>
    [Required] public string StampDirectory { get; set; } = string.Empty;

    /// <summary>Folder under which each model gets its report folder (named after its output path).</summary>
    [Required] public string ReportDirectory { get; set; } = string.Empty;

    /// <summary>Folder under which each model gets a cache of intermediate models (named after its output path); empty: no cache.</summary>
    public string CacheDirectory { get; set; } = string.Empty;

    /// <summary>The engine's compress-model.dll (its version goes into the stamps).</summary>
    [Required] public string EnginePath { get; set; } = string.Empty;

    public bool GateFailureAsWarning { get; set; }

    /// <summary>Metadata names the targets interpret themselves (not settings).</summary>
    public string[]? OwnedMetadata { get; set; }

    /// <summary>The items again, with <c>_ReportDirectory</c>, <c>_StampFile</c> and <c>_Dependencies</c> added.</summary>
    [Output] public ITaskItem[] PreparedModels { get; private set; } = [];

    /// <summary>The stamp files (for FileWrites).</summary>
    [Output] public ITaskItem[] StampFiles { get; private set; } = [];

    /// <summary>The engine's default lock file name suffix (FallbackOptions.LockSuffix; the task does not load the engine).</summary>
    internal const string LockSuffix = ".compress.lock.json";

    public override bool Execute()
    {
        if (!ModelItems.Validate(Models, Log, requireReportDirectory: false)) return false;

        var owned = ModelItems.OwnedSet(OwnedMetadata);
        var engine = Path.GetFullPath(EnginePath);
        var engineVersion = EngineVersion(engine);
        var prepared = new List<ITaskItem>(Models.Length);
        var stamps = new List<ITaskItem>(Models.Length);

        foreach (var model in Models)
        {
            var targetPath = model.GetMetadata(ModelItems.TargetPath);
            var stampFile = Path.GetFullPath(Path.Combine(StampDirectory, targetPath + ".stamp"));
            var reportDirectory = Path.GetFullPath(Path.Combine(ReportDirectory, Path.ChangeExtension(targetPath, null)));
            var settings = ModelItems.Settings(model, owned);

            var stamp = new StringBuilder()
                .Append("engine=").Append(engineVersion).Append('\n')
                .Append("model=").Append(model.GetMetadata("FullPath")).Append('\n')
                .Append("output=").Append(Path.GetFullPath(model.GetMetadata(ModelItems.OutputFile))).Append('\n')
                .Append("reportDirectory=").Append(reportDirectory).Append('\n')
                .Append("gateFailureAsWarning=").Append(GateFailureAsWarning ? "true" : "false").Append('\n');
            foreach (var (name, value) in settings) stamp.Append(name).Append('=').Append(value.ReplaceLineEndings(" ")).Append('\n');
            var content = stamp.ToString();
            content = "sha256=" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(content))) + "\n" + content;
            if (!WriteIfDifferent(stampFile, content, model)) return false;

            var dependencies = new List<string> { engine, stampFile };
            foreach (var value in settings.Values) dependencies.AddRange(FilesNamedBy(value));
            // The lock file at its default place (a LockFile setting names its own, found above): a lock the user
            // changes or replaces (a pull, a checkout) must rebuild the model.
            if (!settings.ContainsKey("LockFile") && File.Exists(model.GetMetadata("FullPath") + LockSuffix)) dependencies.Add(model.GetMetadata("FullPath") + LockSuffix);

            var item = new TaskItem(model);
            item.SetMetadata(ModelItems.ReportDirectory, ModelItems.Escape(reportDirectory));
            item.SetMetadata(ModelItems.StampFile, ModelItems.Escape(stampFile));
            if (CacheDirectory.Length > 0)
                item.SetMetadata(ModelItems.CacheDirectory, ModelItems.Escape(Path.GetFullPath(Path.Combine(CacheDirectory, Path.ChangeExtension(targetPath, null)))));
            item.SetMetadata(ModelItems.Dependencies, string.Join(';', dependencies.Distinct().Select(ModelItems.Escape)));
            prepared.Add(item);
            stamps.Add(new TaskItem(ModelItems.Escape(stampFile)));
        }

        PreparedModels = [.. prepared];
        StampFiles = [.. stamps];
        return !Log.HasLoggedErrors;
    }

    /// <summary>
    /// The files a setting value names, resolved against the project folder: the file itself, or every file under a
    /// folder (ONNX test-data folders). ';'-separated lists are split. Values that name nothing (numbers, modes,
    /// globs) yield nothing: the task does not need to know which settings are paths.
    /// </summary>
    private IEnumerable<string> FilesNamedBy(string value)
    {
        foreach (var part in value.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (part.AsSpan().IndexOfAny(Path.GetInvalidPathChars()) >= 0 || part.Contains('*') || part.Contains('?')) continue;
            string path;
            try { path = Path.GetFullPath(Path.Combine(ProjectDirectory, part)); }
            catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException) { continue; }

            if (File.Exists(path)) yield return path;
            else if (Directory.Exists(path))
                foreach (var file in Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal)) yield return file;
        }
    }

    private bool WriteIfDifferent(string path, string content, ITaskItem model)
    {
        try
        {
            if (File.Exists(path) && File.ReadAllText(path) == content) return true;
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, content, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false));
            Log.LogMessage(MessageImportance.Low, $"CompressModel: settings of '{model.ItemSpec}' changed, wrote {path}");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.LogError(null, Diagnostics.CannotWriteFile, null, path, 0, 0, 0, 0, $"cannot write the stamp file: {e.Message}");
            return false;
        }
    }

    /// <summary>The engine's product version (informational version), cached per file and timestamp.</summary>
    private static string EngineVersion(string enginePath)
    {
        if (!File.Exists(enginePath)) return "missing";
        return EngineVersions.GetOrAdd((enginePath, File.GetLastWriteTimeUtc(enginePath)),
            key => FileVersionInfo.GetVersionInfo(key.Path).ProductVersion ?? "unknown");
    }
}
