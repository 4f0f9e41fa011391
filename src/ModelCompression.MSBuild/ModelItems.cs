using System.Collections;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

namespace ModelCompression.MSBuild;

/// <summary>
/// What the targets and both tasks agree on about a <c>CompressModel</c> item: the metadata the targets add, which
/// metadata are settings for the engine, and the checks every item must pass before the engine runs.
/// </summary>
internal static class ModelItems
{
    /// <summary>Absolute path of the compressed model under obj/ (set by the targets).</summary>
    public const string OutputFile = "_OutputFile";
    /// <summary>Absolute folder the engine writes the reports (and a failed candidate) to.</summary>
    public const string ReportDirectory = "_ReportDirectory";
    /// <summary>The project file that defines the item (set by the targets from its DefiningProjectFullPath).</summary>
    public const string DefiningProject = "_DefiningProject";
    /// <summary>Absolute folder of the item's cached intermediate models (incremental builds).</summary>
    public const string CacheDirectory = "_CacheDirectory";
    /// <summary>Absolute path of the item's stamp file (settings + engine version).</summary>
    public const string StampFile = "_StampFile";
    /// <summary>MSBuild-escaped, ';'-separated files the output depends on besides the model itself.</summary>
    public const string Dependencies = "_Dependencies";
    /// <summary>Path of the compressed model relative to the output folder (from AssignTargetPath, Link or OutputPath).</summary>
    public const string TargetPath = "TargetPath";

    /// <summary>
    /// The item's settings for the engine: its custom metadata verbatim, minus the names in <paramref name="owned"/>
    /// (metadata the targets interpret themselves), private names starting with '_' and empty values. The names are
    /// not checked here: the engine owns the list of settings and reports unknown names (CM0101).
    /// </summary>
    public static SortedDictionary<string, string> Settings(ITaskItem item, IReadOnlySet<string> owned)
    {
        var settings = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (DictionaryEntry entry in item.CloneCustomMetadata())
        {
            var name = (string)entry.Key;
            var value = entry.Value as string ?? string.Empty;
            if (name.StartsWith('_') || owned.Contains(name) || value.Length == 0) continue;
            settings[name] = value;
        }
        return settings;
    }

    public static IReadOnlySet<string> OwnedSet(string[]? owned) =>
        new HashSet<string>(owned ?? [], StringComparer.OrdinalIgnoreCase);

    /// <summary>
    /// Checks every item and logs every problem (not only the first): the model exists, the output path is set,
    /// stays inside the output folder, is not the source, and no two items share it. Returns false when any failed.
    /// </summary>
    public static bool Validate(ITaskItem[] models, TaskLoggingHelper log, bool requireReportDirectory)
    {
        var ok = true;
        var outputs = new Dictionary<string, ITaskItem>(OperatingSystem.IsLinux() ? StringComparer.Ordinal : StringComparer.OrdinalIgnoreCase);
        foreach (var model in models)
        {
            var source = model.GetMetadata("FullPath");
            if (!File.Exists(source))
            {
                log.LogError(null, Diagnostics.ModelNotFound, null, source, 0, 0, 0, 0, $"model '{model.ItemSpec}' does not exist (CompressModel item)");
                ok = false;
            }

            var targetPath = model.GetMetadata(TargetPath);
            if (targetPath.Length > 0 && (Path.IsPathRooted(targetPath) || targetPath.Replace('\\', '/').Split('/').Contains("..")))
            {
                log.LogError(null, Diagnostics.InvalidOutputPath, null, source, 0, 0, 0, 0,
                    $"output path '{targetPath}' (from Link or OutputPath metadata) must be relative to the output folder and stay inside it");
                ok = false;
            }

            var output = model.GetMetadata(OutputFile);
            if (output.Length == 0 || (requireReportDirectory && model.GetMetadata(ReportDirectory).Length == 0))
            {
                log.LogError(null, Diagnostics.MissingOutputPath, null, source, 0, 0, 0, 0,
                    $"item '{model.ItemSpec}' has no {OutputFile}/{ReportDirectory} metadata: run the CompressModel_Compress target rather than the task itself");
                ok = false;
                continue;
            }

            output = Path.GetFullPath(output);
            if (outputs.Comparer.Equals(output, Path.GetFullPath(source)))
            {
                log.LogError(null, Diagnostics.OutputOverwritesSource, null, source, 0, 0, 0, 0, $"the compressed model would overwrite its source '{source}'");
                ok = false;
            }
            if (outputs.TryGetValue(output, out var other))
            {
                log.LogError(null, Diagnostics.DuplicateOutput, null, source, 0, 0, 0, 0,
                    $"items '{other.ItemSpec}' and '{model.ItemSpec}' would both write '{targetPath}': give one a different Link or OutputPath");
                ok = false;
            }
            else outputs[output] = model;
        }
        return ok;
    }

    /// <summary>Escapes a literal for use in an MSBuild item list (what <c>ProjectCollection.Escape</c> does).</summary>
    public static string Escape(string literal)
    {
        if (literal.AsSpan().IndexOfAny("%*?@$();'") < 0) return literal;
        var builder = new StringBuilder(literal.Length + 8);
        foreach (var c in literal)
        {
            if ("%*?@$();'".Contains(c)) builder.Append('%').Append(((int)c).ToString("x2", System.Globalization.CultureInfo.InvariantCulture));
            else builder.Append(c);
        }
        return builder.ToString();
    }
}
