/* Error case: hex string starting with a jump (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = { [2] 11 22 } condition: $x }
