/* Error case: comparing a string with an integer (yara 4.2.3 rejects this file; so must we). */
rule a { condition: "abc" == 1 }
