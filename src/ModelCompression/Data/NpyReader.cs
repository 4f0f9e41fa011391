using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Text.RegularExpressions;

namespace ModelCompression.Data;

/// <summary>
/// NumPy's .npy format (versions 1–3, little-endian or byte-order-free dtypes, C order) and .npz archives of them,
/// stored or deflated (<c>np.savez</c> / <c>np.savez_compressed</c>).
/// </summary>
public static partial class NpyReader
{
    private static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    public static IReadOnlyList<NdArray> ReadNpz(string path)
    {
        using var archive = ZipFile.OpenRead(path);
        var arrays = new List<NdArray>();
        foreach (var entry in archive.Entries.OrderBy(e => e.FullName, StringComparer.Ordinal))
        {
            if (!entry.FullName.EndsWith(".npy", StringComparison.Ordinal)) continue;
            using var stream = entry.Open();
            arrays.Add(Read(stream, entry.FullName[..^4], entry.Length));
        }
        return arrays;
    }

    public static NdArray ReadNpy(string path)
    {
        using var stream = File.OpenRead(path);
        return Read(stream, Path.GetFileNameWithoutExtension(path), stream.Length);
    }

    /// <summary>Reads one array; <paramref name="length"/> bounds what the header may claim.</summary>
    public static NdArray Read(Stream stream, string name, long length)
    {
        var prefix = ReadExactly(stream, 8, name);
        if (!prefix.AsSpan(0, 6).SequenceEqual(Magic)) throw new InvalidDataException($"'{name}' is not a .npy array (bad magic)");
        var major = prefix[6];
        int headerLength = major switch
        {
            1 => BitConverter.ToUInt16(ReadExactly(stream, 2, name)),
            2 or 3 => checked((int)BitConverter.ToUInt32(ReadExactly(stream, 4, name))),
            _ => throw new InvalidDataException($"'{name}': .npy version {major} is not supported"),
        };
        if (headerLength > 1 << 20 || headerLength > length) throw new InvalidDataException($"'{name}': .npy header of {headerLength} bytes is corrupt");
        var header = (major == 3 ? Encoding.UTF8 : Encoding.Latin1).GetString(ReadExactly(stream, headerLength, name));

        var descr = DescrPattern().Match(header);
        var fortran = FortranPattern().Match(header);
        var shapeMatch = ShapePattern().Match(header);
        if (!descr.Success || !shapeMatch.Success) throw new InvalidDataException($"'{name}': .npy header is not understood: {header.Trim()}");
        if (fortran.Success && fortran.Groups[1].Value == "True") throw new InvalidDataException($"'{name}': Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
        var type = ParseDescr(descr.Groups[1].Value, name);
        var shape = shapeMatch.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => long.TryParse(s.TrimEnd('L'), NumberStyles.None, CultureInfo.InvariantCulture, out var d) ? d
                : throw new InvalidDataException($"'{name}': .npy shape ({shapeMatch.Groups[1].Value}) is not a tuple of non-negative integers")).ToArray();
        long count = 1;
        foreach (var d in shape) count = checked(count * d);
        var bytes = checked(count * NdArray.ElementSize(type));
        if (bytes > length || bytes > Array.MaxLength) throw new InvalidDataException($"'{name}': shape [{string.Join(",", shape)}] needs {bytes} bytes but the file is shorter");
        return NdArray.FromBytes(name, shape, type, ReadExactly(stream, (int)bytes, name));
    }

    private static ArrayElementType ParseDescr(string descr, string name)
    {
        if (descr.Length < 2) throw new InvalidDataException($"'{name}': dtype '{descr}' is not supported");
        var order = descr[0];
        if (order == '>') throw new InvalidDataException($"'{name}': big-endian dtype '{descr}' is not supported");
        return descr[1..] switch
        {
            "f4" => ArrayElementType.Float32,
            "f8" => ArrayElementType.Float64,
            "f2" => ArrayElementType.Float16,
            "i1" => ArrayElementType.Int8,
            "u1" => ArrayElementType.UInt8,
            "i2" => ArrayElementType.Int16,
            "u2" => ArrayElementType.UInt16,
            "i4" => ArrayElementType.Int32,
            "u4" => ArrayElementType.UInt32,
            "i8" => ArrayElementType.Int64,
            "u8" => ArrayElementType.UInt64,
            "b1" => ArrayElementType.Bool,
            _ => throw new InvalidDataException($"'{name}': dtype '{descr}' is not supported"),
        };
    }

    private static byte[] ReadExactly(Stream stream, int count, string name)
    {
        var buffer = new byte[count];
        try { stream.ReadExactly(buffer); }
        catch (EndOfStreamException) { throw new InvalidDataException($"'{name}' is truncated"); }
        return buffer;
    }

    [GeneratedRegex(@"'descr'\s*:\s*'([^']*)'")]
    private static partial Regex DescrPattern();
    [GeneratedRegex(@"'fortran_order'\s*:\s*(True|False)")]
    private static partial Regex FortranPattern();
    [GeneratedRegex(@"'shape'\s*:\s*\(([^)]*)\)")]
    private static partial Regex ShapePattern();
}
