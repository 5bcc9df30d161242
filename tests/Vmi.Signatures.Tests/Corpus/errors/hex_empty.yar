/* Error case: empty hex string (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = { } condition: $x }
