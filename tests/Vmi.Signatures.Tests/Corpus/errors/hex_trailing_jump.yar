/* Error case: hex string ending with a jump (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = { 11 22 [2] } condition: $x }
