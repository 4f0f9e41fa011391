namespace ModelCompression.Cli;

/// <summary>Process exit codes (documented in the README).</summary>
public enum ReturnCode
{
    /// <summary>Done; the gate (if any) passed.</summary>
    Success = 0,
    /// <summary>The gate failed: a threshold was missed. No output model was written.</summary>
    GateFailed = 1,
    /// <summary>Bad usage or bad input (model, data, policy, provider).</summary>
    BadInput = 2,
    /// <summary>An internal error: a bug; please report it.</summary>
    InternalError = 3,
    /// <summary>Cancelled (Ctrl+C); nothing was written to the output.</summary>
    Cancelled = 130,
}
