/* Error case: a fixed jump of length 0 ([0]) is invalid, although [0-0] is accepted (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = { 4D [0] 5A } condition: $x }
