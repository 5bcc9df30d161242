/* Error case: no string matches the wildcard (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = "abc" condition: any of ($z*) and $x }
