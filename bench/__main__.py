import sys

if sys.argv[1:2] == ["profile"]:
    from bench.profile import main

    main(sys.argv[2:])
elif sys.argv[1:2] == ["recovery"]:
    from bench.recovery import main

    main(sys.argv[2:])
elif sys.argv[1:2] == ["soak"]:
    from bench.soak import main

    main(sys.argv[2:])
else:
    from bench.run import main

    main()
