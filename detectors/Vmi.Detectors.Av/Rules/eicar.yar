/*
 * The EICAR anti-virus test file (https://www.eicar.org): the industry's harmless "is the scanner
 * on?" test. A match in a guest means someone is testing the AV path, or a dropper used it as bait.
 */
rule EICAR_Test_File
{
    meta:
        description = "EICAR anti-virus test string"
        severity = "medium"
        mitre_attack = "T1204.002"
        reference = "https://www.eicar.org/download-anti-malware-testfile/"

    strings:
        $eicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

    condition:
        $eicar
}
