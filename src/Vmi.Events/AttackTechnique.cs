using MessagePack;

namespace Vmi.Events;

/// <summary>A MITRE ATT&amp;CK technique (enterprise matrix).</summary>
[MessagePackObject]
public sealed record AttackTechnique(
    [property: Key(0)] string Id,
    [property: Key(1)] string Name,
    [property: Key(2)] string Tactic)
{
    /// <summary>The technique's page on attack.mitre.org (sub-techniques as T1014/001 paths).</summary>
    [IgnoreMember]
    public string Reference => $"https://attack.mitre.org/techniques/{Id.Replace('.', '/')}/";

    // The techniques Vmi's own detectors name. Others can be created freely.
    public static readonly AttackTechnique Rootkit = new("T1014", "Rootkit", "Defense Evasion");
    public static readonly AttackTechnique KernelModules = new("T1547.006", "Kernel Modules and Extensions", "Persistence");
    public static readonly AttackTechnique ProcessInjection = new("T1055", "Process Injection", "Defense Evasion");
    public static readonly AttackTechnique AbuseElevationControl = new("T1548", "Abuse Elevation Control Mechanism", "Privilege Escalation");
    public static readonly AttackTechnique AccessTokenManipulation = new("T1134", "Access Token Manipulation", "Privilege Escalation");
    public static readonly AttackTechnique ExploitationForPrivilegeEscalation = new("T1068", "Exploitation for Privilege Escalation", "Privilege Escalation");
    public static readonly AttackTechnique HideArtifacts = new("T1564", "Hide Artifacts", "Defense Evasion");
    public static readonly AttackTechnique ImpairDefenses = new("T1562", "Impair Defenses", "Defense Evasion");
    public static readonly AttackTechnique CommandAndScriptingInterpreter = new("T1059", "Command and Scripting Interpreter", "Execution");
}
