using System.CommandLine;
using ModelCompression.Evaluation;
using ModelCompression.Policy;

namespace ModelCompression.Cli;

/// <summary>
/// Command-line options generated from the policy table: <c>MaxAccuracyDrop</c> becomes <c>--max-accuracy-drop</c>.
/// Values stay strings here; <see cref="PolicySettings.Parse"/> validates them exactly as it does MSBuild metadata.
/// </summary>
public sealed class PolicyOptions
{
    /// <summary>The settings that mean something when gating an existing pair (evaluate has no techniques).</summary>
    public static bool IsGateSetting(Setting setting) =>
        setting.Group == GateOptions.Group || setting.Group == ExecutionOptions.Group || setting.Name == "ValidationData";

    private readonly List<(Setting Setting, Option<string> Option)> _options = [];

    public PolicyOptions(Func<Setting, bool> include)
    {
        foreach (var setting in PolicySettings.Options.Where(include))
            _options.Add((setting, new Option<string>(setting.OptionName) { Description = $"{setting.Description} [{setting.Values}]{(setting.DefaultText.Length > 0 ? $" Default: {setting.DefaultText}." : "")}", HelpName = setting.Values.Length <= 24 ? setting.Values : "value" }));
    }

    public void AddTo(Command command)
    {
        foreach (var (_, option) in _options) command.Add(option);
    }

    /// <summary>The settings the user gave, as name/value pairs for <see cref="PolicySettings.Parse"/>.</summary>
    public IEnumerable<KeyValuePair<string, string>> Values(ParseResult parse)
    {
        foreach (var (setting, option) in _options)
            if (parse.GetResult(option) is { Implicit: false } && parse.GetValue(option) is { } value)
                yield return KeyValuePair.Create(setting.Name, value);
    }

    public CompressionPolicy Parse(ParseResult parse) => PolicySettings.Parse(Values(parse), Directory.GetCurrentDirectory());
}
