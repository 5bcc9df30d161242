namespace Vmi.Export.Elasticsearch;

/// <summary>Where and how to reach Elasticsearch.</summary>
public sealed record ElasticsearchOptions
{
    /// <summary>Base URLs of the nodes (<c>https://es1:9200/</c>); a node that cannot be reached hands over to the next.</summary>
    public required IReadOnlyList<Uri> Nodes { get; init; }

    /// <summary>Data stream for alerts (<c>type-dataset-namespace</c>, Elastic's naming scheme).</summary>
    public string AlertsDataStream { get; init; } = "logs-vmi.alerts-default";

    /// <summary>Data stream for everything else.</summary>
    public string EventsDataStream { get; init; } = "logs-vmi.events-default";

    /// <summary>
    /// API key in Elasticsearch's encoded form (the <c>encoded</c> field of the create-API-key answer,
    /// base64 of <c>id:key</c>), sent as <c>Authorization: ApiKey …</c>. Takes precedence over basic auth.
    /// </summary>
    public string? ApiKey { get; init; }

    /// <summary>User for basic authentication (with <see cref="Password"/>).</summary>
    public string? Username { get; init; }

    public string? Password { get; init; }

    /// <summary>PEM file of the certificate authority that signed the nodes' certificates (instead of the system's trust store).</summary>
    public string? CaFile { get; init; }

    /// <summary>Put the index templates on first use (needs the <c>manage_index_templates</c> cluster privilege). Off when an administrator manages them.</summary>
    public bool SetUpTemplates { get; init; } = true;

    /// <summary>Time one request may take before it counts as a lost connection (and is retried).</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(60);
}
