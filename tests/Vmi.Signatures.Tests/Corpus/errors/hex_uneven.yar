/* Error case: uneven number of hex digits (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = { 4D 5 } condition: $x }
