using System.Globalization;
using System.Text.Json.Nodes;

namespace ModelCompression.Policy;

/// <summary>Where a setting may be given: everywhere (CLI, MSBuild, policy file) or only for the whole model.</summary>
public enum SettingScope
{
    /// <summary>CLI option and MSBuild metadata; one value for the whole model.</summary>
    Model,
    /// <summary>CLI option and MSBuild metadata, and per layer in a policy file.</summary>
    PerLayer,
    /// <summary>Only per layer in a policy file (e.g. <c>Excluded</c>).</summary>
    PolicyFileOnly,
}

/// <summary>
/// One declared setting of an options record: its name (MSBuild metadata; kebab-cased for the CLI), accepted values,
/// default, scope and one-line description. Everything a user sees about settings — CLI options, MSBuild defaults,
/// docs tables, the policy-file schema — is generated from these declarations.
/// </summary>
public abstract class Setting
{
    private protected Setting(OptionsGroup group, string name, string description, SettingScope scope)
    {
        Group = group;
        Name = name;
        Description = description;
        Scope = scope;
    }

    public OptionsGroup Group { get; }
    public string Name { get; }
    public string Description { get; }
    public SettingScope Scope { get; }
    public bool PerLayer => Scope != SettingScope.Model;
    /// <summary>Whether the setting exists as a CLI option and MSBuild metadata (false for policy-file-only ones).</summary>
    public bool IsOption => Scope != SettingScope.PolicyFileOnly;

    /// <summary>The accepted values as shown in help and docs (<c>none|int8</c>, <c>[0, 1)</c>, <c>path</c>).</summary>
    public abstract string Values { get; }
    /// <summary>The default as users would type it; empty when unset by default.</summary>
    public abstract string DefaultText { get; }
    /// <summary>The JSON schema of the value in a policy file.</summary>
    public abstract JsonObject ValueSchema();

    /// <summary>Parses a raw value; <see cref="FormatException"/> says why it is invalid.</summary>
    public abstract object? Parse(string raw, string baseDirectory);
    /// <summary>A parsed value as users would type it.</summary>
    public abstract string Format(object? value);

    internal abstract object Apply(object options, object? value);
    internal abstract object? Read(object options);

    /// <summary>The CLI spelling: <c>MaxAccuracyDrop</c> → <c>--max-accuracy-drop</c>.</summary>
    public string OptionName => "--" + string.Concat(Name.Select((c, i) => char.IsUpper(c) && i > 0 ? "-" + char.ToLowerInvariant(c) : char.ToLowerInvariant(c).ToString()));
    /// <summary>The project-wide MSBuild property that fills this metadata for every item that does not set it.</summary>
    public string MSBuildDefaultProperty => "CompressModelDefault" + Name;

    public override string ToString() => Name;
}

/// <summary>A setting stored in the options record <typeparamref name="TOptions"/> as a <typeparamref name="TValue"/>.</summary>
public sealed class Setting<TOptions, TValue> : Setting where TOptions : class
{
    private readonly ValueSyntax<TValue> _syntax;
    private readonly Func<TOptions, TValue> _get;
    private readonly Func<TOptions, TValue, TOptions> _set;

    internal Setting(OptionsGroup group, string name, string description, SettingScope scope, ValueSyntax<TValue> syntax,
        Func<TOptions, TValue> get, Func<TOptions, TValue, TOptions> set)
        : base(group, name, description, scope)
    {
        _syntax = syntax;
        _get = get;
        _set = set;
    }

    public override string Values => _syntax.Values;
    public override string DefaultText => Format(_get((TOptions)Group.CreateDefault()));
    public override JsonObject ValueSchema() => _syntax.Schema();
    public override object? Parse(string raw, string baseDirectory) => _syntax.Parse(raw.Trim(), baseDirectory);
    public override string Format(object? value) => _syntax.Format((TValue)value!);
    internal override object Apply(object options, object? value) => _set((TOptions)options, (TValue)value!);
    internal override object? Read(object options) => _get((TOptions)options);
}

/// <summary>How one kind of value is written, parsed, shown and described in the JSON schema.</summary>
public abstract class ValueSyntax<T>
{
    public abstract string Values { get; }
    public abstract T Parse(string raw, string baseDirectory);
    public virtual string Format(T value) => Convert.ToString(value, CultureInfo.InvariantCulture) ?? "";
    public abstract JsonObject Schema();
}

/// <summary>The value syntaxes settings are declared with. Ranges are written from their bounds, so docs never drift.</summary>
public static class Syntax
{
    /// <summary>A finite number in a range; <paramref name="minOpen"/>/<paramref name="maxOpen"/> exclude the bound.</summary>
    public static ValueSyntax<double> Number(double min, double max, bool minOpen = false, bool maxOpen = false) => new NumberSyntax(min, max, minOpen, maxOpen);
    public static ValueSyntax<int> Integer(int min, int max) => new IntegerSyntax(min, max);
    public static ValueSyntax<bool> Bool { get; } = new BoolSyntax();
    /// <summary>A file or folder; relative paths resolve against the project (MSBuild) or current (CLI) folder.</summary>
    public static ValueSyntax<string?> Path { get; } = new PathSyntax(mustExist: false);
    /// <summary>A file that must exist when the setting is parsed (not a data file, which the data check reads).</summary>
    public static ValueSyntax<string?> ExistingFile { get; } = new PathSyntax(mustExist: true);
    public static ValueSyntax<T> Enum<T>(params (string Text, T Value)[] values) where T : struct, System.Enum => new EnumSyntax<T>(values);
    /// <summary>An optional value: unset by default, parsed by <paramref name="inner"/> when given.</summary>
    public static ValueSyntax<T?> Optional<T>(ValueSyntax<T> inner) where T : struct => new OptionalSyntax<T>(inner);

    /// <summary>A value with its own grammar, for the few settings (N:M, ranks, providers) that are not plain.</summary>
    public static ValueSyntax<T> Custom<T>(string values, Func<string, T> parse, Func<T, string> format, Func<JsonObject> schema) => new CustomSyntax<T>(values, parse, format, schema);

    internal static string FormatNumber(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    private sealed class NumberSyntax(double min, double max, bool minOpen, bool maxOpen) : ValueSyntax<double>
    {
        public override string Values => $"{(minOpen ? "(" : "[")}{Bound(min)}, {Bound(max)}{(maxOpen ? ")" : "]")}";
        private static string Bound(double v) => v >= 1e5 ? v.ToString("0e0", CultureInfo.InvariantCulture) : FormatNumber(v);

        public override double Parse(string raw, string baseDirectory)
        {
            if (!double.TryParse(raw, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !double.IsFinite(v))
                throw new FormatException($"expected a number in {Values}");
            if (v < min || v > max || (minOpen && v == min) || (maxOpen && v == max)) throw new FormatException($"out of range: expected a number in {Values}");
            return v;
        }

        public override string Format(double value) => FormatNumber(value);

        public override JsonObject Schema()
        {
            var schema = new JsonObject { ["type"] = "number" };
            schema[minOpen ? "exclusiveMinimum" : "minimum"] = min;
            schema[maxOpen ? "exclusiveMaximum" : "maximum"] = max;
            return schema;
        }
    }

    private sealed class IntegerSyntax(int min, int max) : ValueSyntax<int>
    {
        public override string Values => $"[{min}, {max}]";

        public override int Parse(string raw, string baseDirectory)
        {
            if (!int.TryParse(raw, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v)) throw new FormatException($"expected an integer in {Values}");
            if (v < min || v > max) throw new FormatException($"out of range: expected an integer in {Values}");
            return v;
        }

        public override JsonObject Schema() => new() { ["type"] = "integer", ["minimum"] = min, ["maximum"] = max };
    }

    private sealed class BoolSyntax : ValueSyntax<bool>
    {
        public override string Values => "true|false";
        public override bool Parse(string raw, string baseDirectory) => bool.TryParse(raw, out var v) ? v : throw new FormatException("expected true or false");
        public override string Format(bool value) => value ? "true" : "false";
        public override JsonObject Schema() => new() { ["type"] = "boolean" };
    }

    private sealed class PathSyntax(bool mustExist) : ValueSyntax<string?>
    {
        public override string Values => "path";

        public override string? Parse(string raw, string baseDirectory)
        {
            var path = System.IO.Path.GetFullPath(System.IO.Path.Combine(baseDirectory, raw));
            return !mustExist || File.Exists(path) ? path : throw new FormatException($"'{path}' does not exist");
        }

        public override string Format(string? value) => value ?? "";
        public override JsonObject Schema() => new() { ["type"] = "string" };
    }

    /// <summary>Every declared enum value's text, so reports print enum values exactly as users type them.</summary>
    internal static readonly System.Collections.Concurrent.ConcurrentDictionary<System.Enum, string> EnumText = new();

    private sealed class EnumSyntax<T> : ValueSyntax<T> where T : struct, System.Enum
    {
        private readonly (string Text, T Value)[] values;

        public EnumSyntax((string Text, T Value)[] values)
        {
            this.values = values;
            foreach (var (text, value) in values) EnumText[value] = text;
        }

        public override string Values => string.Join("|", values.Select(v => v.Text));

        public override T Parse(string raw, string baseDirectory)
        {
            foreach (var (text, value) in values)
                if (string.Equals(text, raw, StringComparison.OrdinalIgnoreCase)) return value;
            throw new FormatException($"expected one of {string.Join(", ", values.Select(v => v.Text))}");
        }

        public override string Format(T value) => values.First(v => v.Value.Equals(value)).Text;
        public override JsonObject Schema() => new() { ["enum"] = new JsonArray(values.Select(v => (JsonNode)JsonValue.Create(v.Text)!).ToArray()) };
    }

    private sealed class OptionalSyntax<T>(ValueSyntax<T> inner) : ValueSyntax<T?> where T : struct
    {
        public override string Values => inner.Values;
        public override T? Parse(string raw, string baseDirectory) => inner.Parse(raw, baseDirectory);
        public override string Format(T? value) => value is { } v ? inner.Format(v) : "";
        public override JsonObject Schema() => inner.Schema();
    }

    private sealed class CustomSyntax<T>(string values, Func<string, T> parse, Func<T, string> format, Func<JsonObject> schema) : ValueSyntax<T>
    {
        public override string Values => values;
        public override T Parse(string raw, string baseDirectory) => parse(raw);
        public override string Format(T value) => format(value);
        public override JsonObject Schema() => schema();
    }
}
