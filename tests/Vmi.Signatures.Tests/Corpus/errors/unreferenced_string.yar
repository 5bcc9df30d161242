/* Error case: unreferenced string (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = "abc" $y = "def" condition: $x }
