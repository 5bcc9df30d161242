/*
 * Signatures of the lab's harmless test "malware", /lab/bin/vmi-malware
 * (src/Vmi.Lab/Guest/programs/vmi-malware.c, scenario "malware").
 *
 * Vmi_Test_Malware_Plain matches the program file and any process running it.
 * Vmi_Test_Malware_Unpacked matches only process memory: the payload is stored XOR-encoded and
 * exists decoded only in the anonymous executable mapping the program creates at run time
 * (modes unpack, rwx, and wait after SIGUSR1), so a match proves the scanner read guest memory.
 * Plain YARA, no modules.
 */

rule Vmi_Test_Malware_Plain
{
    meta:
        description = "Vmi lab test program vmi-malware: plain signature in .rodata and .data"
        mitre_attack = "T1204.002"
        severity = "low"
        version = 1
        lab_only = true

    strings:
        $marker = "VMI-TEST-MALWARE-PLAIN-7f3a9c" ascii
        $data = { 7F 3A 9C E1 5B D2 08 96 C4 4F A7 31 EE 62 1D B9 05 88 F3 2A }

    condition:
        all of them
}

rule Vmi_Test_Malware_Unpacked
{
    meta:
        description = "Vmi lab test program vmi-malware: payload unpacked into anonymous executable memory (not on disk)"
        mitre_attack = "T1027.002"
        severity = "high"
        version = 1
        lab_only = true

    strings:
        $marker = "VMI-TEST-MALWARE-UNPACKED-4b1d2e" ascii
        // movabs rax, 0x4b1d2e5a11c0ffee ; xor rax, 0x11223344 ; rol rax, 13 ; ret
        $code = { 48 B8 EE FF C0 11 5A 2E 1D 4B 48 35 44 33 22 11 48 C1 C0 0D C3 }

    condition:
        all of them
}
