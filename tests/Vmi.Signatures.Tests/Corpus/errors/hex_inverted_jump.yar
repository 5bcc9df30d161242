/* Error case: jump with min > max (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = { 11 [5-2] 22 } condition: $x }
