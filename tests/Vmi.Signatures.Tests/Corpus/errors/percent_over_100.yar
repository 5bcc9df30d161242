/* Error case: percentage above 100 (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = "abc" condition: 101% of them }
