/* Error case: duplicated string identifier (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = "x1" $x = "y1" condition: $x }
