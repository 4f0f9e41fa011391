using System.CommandLine;
using ModelCompression.Policy;

namespace ModelCompression.Cli.Commands;

/// <summary>
/// <c>compress-model settings --format markdown|json-schema|msbuild</c>: every setting as the docs table, the policy-file
/// JSON schema, or the MSBuild defaults file — all generated from the settings' declarations.
/// </summary>
public static class SettingsCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var format = new Option<string>("--format") { Description = $"What to print: {SettingsDocs.Formats}.", DefaultValueFactory = _ => "markdown" };
        format.AcceptOnlyFromAmong("markdown", "json-schema", "msbuild");
        var file = new Option<string>("--output", "-o") { Description = "Write to this file instead of standard output." };
        var command = new Command("settings", "Describe every setting (name, values, default, meaning) as Markdown, a policy-file JSON schema, or MSBuild defaults.") { format, file };
        command.SetAction(parse => CompressModelApp.Guard(error, () =>
        {
            var text = SettingsDocs.Render(parse.GetValue(format)!);
            if (parse.GetValue(file) is { } path)
            {
                var full = Path.GetFullPath(path);
                Directory.CreateDirectory(Path.GetDirectoryName(full)!);
                File.WriteAllText(full, text);
            }
            else output.Write(text);
            return ReturnCode.Success;
        }));
        return command;
    }
}
