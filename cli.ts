console.log("radixlm cli")
